"""Bilinear ``grid_sample`` with the StyleGAN2-ADA interface.

ADA's geometric augmentations resample images with ``grid_sample`` and the R1 penalty then
differentiates through them twice. The official module carried a custom op because old PyTorch
lacked that second derivative; current PyTorch's ``grid_sample`` supports double backward with
respect to both the image and the grid (checked by ``gradgradcheck`` in tests/test_ops.py), so
this is a plain call. ``enabled`` is kept because official training code assigns it.
"""

import torch.nn.functional as F

enabled = False


def grid_sample(input, grid):
    """Sample ``input`` [N, C, H, W] at ``grid`` [N, Ho, Wo, 2] in [-1, 1] coordinates:
    bilinear, zeros outside, ``align_corners=False``.
    """
    return F.grid_sample(input, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
