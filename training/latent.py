"""Latent samplers: what goes into the generator (seam 1 of docs/ARCHITECTURE.md).

A sampler is a persistent `torch.nn.Module` (so it travels inside snapshots and loads without
the code that trained it) with

- `z_dim`: the width of the `z` it produces (the generator's `z_dim`),
- `sample(batch_size, device, generator=None) -> dnnlib.EasyDict(z=[N, z_dim], ...)`: extra
  tensors (e.g. a disentangled code) ride along under their own keys with the batch as dim 0;
  loss terms read them, the training loop splits them per `batch_gpu` round like `z`.
- `sample_seed(seed, device)` (optional): the latent of one seed for generate.py; samplers without
  it are seeded through a torch.Generator.
- `layout()`: a JSON-able description of the z layout (written to training_options.json).

The default is the standard normal prior of StyleGAN2. Plug-ins provide other samplers by class
name (`latent_kwargs.class_name`); this module never imports them.
"""

import numpy as np
import torch

import dnnlib
from torch_utils import persistence


@persistence.persistent_class
class GaussianLatent(torch.nn.Module):
    """z ~ N(0, I) of width z_dim: plain StyleGAN2, and the fallback for official pickles."""

    def __init__(self, z_dim=512):
        super().__init__()
        self.z_dim = int(z_dim)

    def sample(self, batch_size, device='cpu', generator=None):
        z = torch.randn([int(batch_size), self.z_dim], device=device, generator=generator)
        return dnnlib.EasyDict(z=z)

    def sample_seed(self, seed, device='cpu'):
        """The latent of one seed exactly as StyleGAN2-ADA's generate.py draws it (same images)."""
        z = np.random.RandomState(int(seed)).randn(1, self.z_dim)
        return dnnlib.EasyDict(z=torch.from_numpy(z).to(device=device, dtype=torch.float32))

    def layout(self):
        return dict(kind='gaussian', z_dim=self.z_dim)


def sample_for_seed(sampler, seed, device='cpu'):
    """One latent (batch of 1) for an integer seed, reproducible across runs and machines."""
    if hasattr(sampler, 'sample_seed'):
        return sampler.sample_seed(seed, device=device)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    return sampler.sample(1, device=device, generator=generator)


def split_latents(latents, chunk):
    """Split every tensor of a sampler's output along dim 0 into chunks of `chunk` rows."""
    keys = list(latents.keys())
    parts = [latents[k].split(chunk) for k in keys]
    return [dnnlib.EasyDict(zip(keys, values)) for values in zip(*parts)]
