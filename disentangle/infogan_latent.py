"""InfoGAN's latent: categorical and continuous codes plus Gaussian noise (docs/INFOGAN.md).

`InfoGANLatent` is seam 1 of docs/ARCHITECTURE.md. What G eats is

    z = cat(one-hot of every categorical group, continuous codes ~ U(-1, 1), noise ~ N(0, I))

with the codes first, so `disentangle.latents.CodeMappingNetwork(code_dim=sampler.z_code_dim)`
leaves them unnormalised (StyleGAN2's second-moment normalisation would rescale a code by the
noise's length) and normalises only the noise. Besides `z`, `sample()` returns

    code   float [N, n_cat_groups + n_cont]   a categorical group as ONE column holding the category
                                              index (as a float), a continuous code as its value
    noise  float [N, noise_dim]

`code` is the convention shared with metrics/ and select_model.py: a ground-truth-like view of
the latent, one column per code. Noise is Gaussian (StyleGAN2's prior) where the official
InfoGAN-CR code draws it from U(-1, 1): **(our choice)**, the mapping normalises it anyway.

This file is embedded in snapshots (persistent class): at module level it may only import torch,
numpy, dnnlib and torch_utils.
"""

import numpy as np
import torch

import dnnlib
from torch_utils import misc, persistence

CONT_LOW, CONT_HIGH = -1.0, 1.0


def one_hot(index, num_classes, dtype):
    """[N] int64 -> [N, num_classes] of `dtype`: no host sync on any device (torch's one_hot reads the
    range on the CPU), and a category out of range gives a zero row, not a device-side assert."""
    return (index.unsqueeze(1) == torch.arange(num_classes, device=index.device)).to(dtype)


def check_categories(index, num_classes, what):
    """Raise ValueError unless the CPU tensor `index` holds categories in 0..num_classes-1."""
    if index.numel() and (index.min() < 0 or index.max() >= num_classes):
        bad = int(index.min()) if index.min() < 0 else int(index.max())
        raise ValueError(f'{what} has categories 0..{num_classes - 1}, not {bad}.')


@persistence.persistent_class
class InfoGANLatent(torch.nn.Module):
    """z = cat(one-hot groups, U(-1, 1) codes, N(0, I) noise); see the module docstring."""

    def __init__(self, cat_sizes=(), cont_dim=5, noise_dim=5):
        super().__init__()
        self.cat_sizes = tuple(int(k) for k in cat_sizes)
        if any(k < 2 for k in self.cat_sizes):
            raise ValueError(f'categorical codes need at least 2 categories each, got {list(self.cat_sizes)}.')
        self.cont_dim = int(cont_dim)
        self.noise_dim = int(noise_dim)
        if self.cont_dim < 0 or self.noise_dim < 0:
            raise ValueError('cont_dim and noise_dim must not be negative.')
        if not self.cat_sizes and self.cont_dim == 0:
            raise ValueError('an InfoGAN latent needs at least one categorical or continuous code.')
        self.num_cat = len(self.cat_sizes)
        self.code_dim = self.num_cat + self.cont_dim          # columns of `code`
        self.onehot_dim = sum(self.cat_sizes)
        self.z_code_dim = self.onehot_dim + self.cont_dim     # leading z entries that are codes
        self.z_dim = self.z_code_dim + self.noise_dim

    # -- sampling -----------------------------------------------------------------------------
    def sample(self, batch_size, device='cpu', generator=None):
        """EasyDict(z=[N, z_dim], code=[N, code_dim], noise=[N, noise_dim])."""
        n = int(batch_size)
        device = misc.draw_device(device, generator)
        cats = [torch.randint(k, [n], generator=generator, device=device) for k in self.cat_sizes]
        cont = torch.rand([n, self.cont_dim], generator=generator, device=device)
        cont = cont * (CONT_HIGH - CONT_LOW) + CONT_LOW
        noise = torch.randn([n, self.noise_dim], generator=generator, device=device)
        code = torch.cat([torch.stack(cats, dim=1).float() if cats else cont[:, :0], cont], dim=1)
        return self.assemble(code, noise, check=False)   # categories valid by construction

    def sample_seed(self, seed, device='cpu'):
        """One latent per integer seed, identical on every machine (numpy's generator, as generate.py)."""
        rnd = np.random.RandomState(int(seed))
        cats = [rnd.randint(k) for k in self.cat_sizes]
        cont = rnd.uniform(CONT_LOW, CONT_HIGH, size=self.cont_dim)
        noise = rnd.randn(1, self.noise_dim)
        code = torch.tensor([list(cats) + list(cont)], dtype=torch.float32, device=device).reshape(1, self.code_dim)
        return self.assemble(code, torch.from_numpy(noise).to(device=device, dtype=torch.float32))

    def assemble(self, code, noise, check=True):
        """The sampler's output for codes [N, code_dim] (the `code` convention) and noise [N, noise_dim].

        check=False skips the category check of code_to_z (for codes this sampler drew).
        """
        misc.assert_shape(code, [None, self.code_dim])
        misc.assert_shape(noise, [code.shape[0], self.noise_dim])
        code = code.to(torch.float32)
        noise = noise.to(code.device, torch.float32)
        return dnnlib.EasyDict(z=torch.cat([self.code_to_z(code, check), noise], dim=1), code=code, noise=noise)

    def code_to_z(self, code, check=True):
        """[N, code_dim] -> [N, z_code_dim]: one-hot groups then the continuous values.

        With `check`, categories are range-checked where they already are on the host (CPU tensors);
        on an accelerator the check would stall the device, and a category out of range there gives
        an all-zero one-hot group instead of an error. Sampled codes skip the check.
        """
        parts = []
        for group, k in enumerate(self.cat_sizes):
            index = code[:, group].round().long()
            if check and index.device.type == 'cpu':
                check_categories(index, k, f'categorical code {group}')
            parts.append(one_hot(index, k, code.dtype))
        parts.append(code[:, self.num_cat:])
        return torch.cat(parts, dim=1)

    def categories(self, code):
        """[N, num_cat] int64 category indices of `code`."""
        return code[:, :self.num_cat].round().long()

    def continuous(self, code):
        return code[:, self.num_cat:]

    # -- traversals and edits (disentangle/traverse.py) ----------------------------------------
    def is_categorical(self, dim):
        return dim < self.num_cat

    def traversal_values(self, dim, steps, quantiles=None):
        """Values of code column `dim`: every category, or `steps` values over the U(-1, 1) range."""
        if self.is_categorical(dim):
            return torch.arange(self.cat_sizes[dim], dtype=torch.float32)
        lo, hi = CONT_LOW, CONT_HIGH
        if quantiles is not None:   # quantiles of U(-1, 1)
            lo, hi = (CONT_LOW + q * (CONT_HIGH - CONT_LOW) for q in quantiles)
        return torch.linspace(lo, hi, int(steps))

    def set_code(self, z, dim, values):
        """A copy of z [N, z_dim] with code column `dim` set to `values` (scalar or [N])."""
        z = z.clone()
        values = torch.as_tensor(values, dtype=z.dtype, device=z.device).expand(z.shape[0])
        if self.is_categorical(dim):
            start = sum(self.cat_sizes[:dim])
            k = self.cat_sizes[dim]
            index = values.round().long()
            if index.device.type == 'cpu':
                check_categories(index, k, f'categorical code {dim}')
            z[:, start:start + k] = one_hot(index, k, z.dtype)
        else:
            z[:, self.onehot_dim + dim - self.num_cat] = values
        return z

    def layout(self):
        return dict(kind='infogan', z_dim=self.z_dim, cat_sizes=list(self.cat_sizes), cont_dim=self.cont_dim,
                    noise_dim=self.noise_dim, onehot=[0, self.onehot_dim],
                    cont=[self.onehot_dim, self.z_code_dim], noise=[self.z_code_dim, self.z_dim],
                    code_columns=[f'cat{i}' for i in range(self.num_cat)] +
                                 [f'cont{i}' for i in range(self.cont_dim)])
