"""``conv2d`` / ``conv_transpose2d`` entry points with the StyleGAN2-ADA interface.

The official module replaced PyTorch's convolution by a custom op because old PyTorch versions
could not take second-order gradients through cuDNN convolutions and always computed weight
gradients. Modern PyTorch has neither problem, so here both functions are thin wrappers around
``torch.nn.functional`` and are differentiable to any order on every device.

``no_weight_gradients()`` exists because the R1 and path-length regularisers differentiate
with respect to *inputs only* (``torch.autograd.grad(..., inputs=[images])``). PyTorch's engine
already prunes that backward pass: a convolution's backward node is asked only for the
gradients that lead to the requested inputs, so the weight gradient is never computed (measured:
for a 256->256 3x3 conv on 8x256x32x32, ``grad(inputs=[x])`` costs one input-gradient
convolution, ``grad(inputs=[x, w])`` adds a second, equally expensive one). The context
therefore only records the flag, for code that inspects it, and is correct as a no-op.
``enabled`` is kept because official training code assigns it; it changes nothing here.
"""

import contextlib

import torch.nn.functional as F

enabled = False
weight_gradients_disabled = False


@contextlib.contextmanager
def no_weight_gradients(disable=True):
    """Mark a region whose backward passes need no weight gradients (see module docstring)."""
    global weight_gradients_disabled
    previous = weight_gradients_disabled
    if disable:
        weight_gradients_disabled = True
    try:
        yield
    finally:
        weight_gradients_disabled = previous


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Same as ``torch.nn.functional.conv2d`` (kept for the official interface)."""
    return F.conv2d(input, weight, bias=bias, stride=stride, padding=padding, dilation=dilation, groups=groups)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Same as ``torch.nn.functional.conv_transpose2d`` (kept for the official interface)."""
    return F.conv_transpose2d(input, weight, bias=bias, stride=stride, padding=padding,
                              output_padding=output_padding, groups=groups, dilation=dilation)

