"""ID-GAN's latent: a VAE code from the aggregate posterior, plus Gaussian nuisance (docs/IDGAN.md).

`PosteriorBankLatent` is seam 1 of docs/ARCHITECTURE.md. Encoding real images at every step
would cost an encoder pass per sample, so `prepare()` encodes a random subset of the training set
once into a *posterior bank* (mean and log-variance of q(code | x) per image); sampling picks a
row and draws the reparametrised code mu + sigma * eps. The bank lives in buffers, so a snapshot
carries it and generation needs no dataset and no VAE file.

    z = cat(code [code_dim], nuisance [nuisance_dim])      nuisance ~ N(0, I), may be 0 wide

`CodeMappingNetwork` (seam 2) is StyleGAN2's mapping MLP with one change: StyleGAN2 rescales z to
unit second moment, which would throw away the code's length (codes c and 2c would give the same
image, so E could never recover c). Only the nuisance part is normalised here; the code enters at
the scale of the aggregate posterior, which is close to unit scale by the VAE's KL term anyway.

This file is embedded in snapshots (persistent classes): at module level it may only import
torch, numpy, dnnlib and torch_utils.
"""

import numpy as np
import torch

import dnnlib
from torch_utils import misc, persistence

DEFAULT_BANK_SIZE = 20000
TRAVERSAL_QUANTILES = (0.02, 0.98)


class PosteriorBankError(RuntimeError):
    """The bank is used before prepare() filled it."""


@persistence.persistent_class
class PosteriorBankLatent(torch.nn.Module):
    """z = cat(code from the VAE's aggregate posterior, nuisance ~ N(0, I)); see the module docstring.

    `vae_pkl` is only read by prepare(); `code_dim` must match its encoder (train.py checks).
    """

    def __init__(self, vae_pkl=None, code_dim=10, nuisance_dim=0, bank_size=DEFAULT_BANK_SIZE, bank_seed=0,
                 encode_batch=256, verbose=True):
        super().__init__()
        self.vae_pkl = None if vae_pkl is None else str(vae_pkl)
        self.code_dim = int(code_dim)
        self.nuisance_dim = int(nuisance_dim)
        self.z_dim = self.code_dim + self.nuisance_dim
        self.bank_size = int(bank_size)
        self.bank_seed = int(bank_seed)
        self.encode_batch = int(encode_batch)
        self.verbose = bool(verbose)
        self.register_buffer('bank_mu', torch.zeros([0, self.code_dim]))
        self.register_buffer('bank_logvar', torch.zeros([0, self.code_dim]))

    # -- building the bank ----------------------------------------------------------------------
    def prepare(self, training_set, device='cpu', encoder=None):
        """Encode a random subset of `training_set` (the VAE of `vae_pkl`, or `encoder`) into the bank."""
        device = torch.device(device)
        if encoder is None:
            from training.vae_snapshot import load_vae_encoder  # host code, only needed while training
            encoder = load_vae_encoder(self.vae_pkl, device=device, resolution=training_set.resolution,
                                       num_channels=training_set.num_channels)
        if encoder.code_dim != self.code_dim:
            raise ValueError(f'the encoder has {encoder.code_dim} code dimensions, the sampler {self.code_dim}.')
        count = min(self.bank_size, len(training_set))
        indices = np.sort(np.random.RandomState(self.bank_seed).choice(len(training_set), count, replace=False))
        mus, logvars = [], []
        from dnnlib.progress import Progress
        with Progress(count, desc='encoding the posterior bank', unit='img', enabled=self.verbose) as progress:
            for start in range(0, count, self.encode_batch):
                chunk = indices[start:start + self.encode_batch]
                items = training_set.__getitems__(chunk) if hasattr(training_set, '__getitems__') \
                    else [training_set[int(i)] for i in chunk]
                images = torch.from_numpy(np.stack([item[0] for item in items])).to(device)
                mu, logvar = encode_images(encoder, images.to(torch.float32) / 127.5 - 1)
                mus.append(mu.cpu())
                logvars.append(logvar.cpu())
                progress.update(len(chunk))
        self.set_bank(torch.cat(mus), torch.cat(logvars))

    def set_bank(self, mu, logvar):
        """Replace the bank by posterior parameters [N, code_dim] (fp32, kept on this module's device)."""
        misc.assert_shape(mu, [None, self.code_dim])
        misc.assert_shape(logvar, [mu.shape[0], self.code_dim])
        self.bank_mu = mu.detach().to(self.bank_mu.device, torch.float32).clone()
        self.bank_logvar = logvar.detach().to(self.bank_mu.device, torch.float32).clone()

    def _check_ready(self):
        if self.bank_mu.shape[0] == 0:
            raise PosteriorBankError('the posterior bank is empty: call prepare(training_set) before sampling.')

    # -- sampling ----------------------------------------------------------------------------
    def sample(self, batch_size, device='cpu', generator=None):
        """EasyDict(z=[N, z_dim], code=[N, code_dim], nuisance=[N, nuisance_dim]), drawn on `device`.

        A `generator` must live on `device`; rows of a bank kept elsewhere are gathered there.
        """
        self._check_ready()
        device = misc.draw_device(device, generator)
        n = int(batch_size)
        rows = torch.randint(self.bank_mu.shape[0], [n], generator=generator, device=device)
        eps = torch.randn([n, self.code_dim], generator=generator, device=device)
        nuisance = torch.randn([n, self.nuisance_dim], generator=generator, device=device)
        if self.bank_mu.device != device:
            code = self._reparameterize(rows.to(self.bank_mu.device), eps.to(self.bank_mu.device)).to(device)
        else:
            code = self._reparameterize(rows, eps)
        return self.assemble(code, nuisance)

    def sample_seed(self, seed, device='cpu'):
        """One latent per integer seed, the same on every machine (numpy's generator, as generate.py)."""
        self._check_ready()
        rnd = np.random.RandomState(int(seed))
        row = torch.as_tensor([rnd.randint(self.bank_mu.shape[0])], device=self.bank_mu.device)
        eps = torch.from_numpy(rnd.randn(1, self.code_dim)).to(self.bank_mu.device, torch.float32)
        nuisance = torch.from_numpy(rnd.randn(1, self.nuisance_dim)).to(torch.float32)
        return self.assemble(self._reparameterize(row, eps).to(device), nuisance.to(device))

    def _reparameterize(self, rows, eps):
        return self.bank_mu.index_select(0, rows) + (0.5 * self.bank_logvar.index_select(0, rows)).exp() * eps

    def assemble(self, code, nuisance):
        """The sampler's output for given codes [N, code_dim] and nuisance [N, nuisance_dim]."""
        misc.assert_shape(code, [None, self.code_dim])
        misc.assert_shape(nuisance, [code.shape[0], self.nuisance_dim])
        nuisance = nuisance.to(code.device, code.dtype)
        return dnnlib.EasyDict(z=torch.cat([code, nuisance], dim=1), code=code, nuisance=nuisance)

    # -- describing the code -------------------------------------------------------------------
    def code_quantiles(self, quantiles=TRAVERSAL_QUANTILES, num_samples=20000, seed=0):
        """[len(quantiles), code_dim]: per-dimension quantiles of the aggregate posterior (reproducible)."""
        self._check_ready()
        generator = torch.Generator(device=self.bank_mu.device).manual_seed(int(seed))
        codes = self.sample(num_samples, device=self.bank_mu.device, generator=generator).code
        q = torch.as_tensor(quantiles, dtype=torch.float32, device=codes.device)
        return torch.quantile(codes, q, dim=0)

    def layout(self):
        return dict(kind='posterior_bank', z_dim=self.z_dim, code=[0, self.code_dim],
                    nuisance=[self.code_dim, self.z_dim], code_dim=self.code_dim, nuisance_dim=self.nuisance_dim,
                    bank_size=int(self.bank_mu.shape[0]) or self.bank_size, vae_pkl=self.vae_pkl)


@torch.no_grad()
def encode_images(encoder, images, amp_dtype=None, batch=256):
    """(mu, logvar) fp32 [N, code_dim] of images in [-1, 1] (any resolution that area-resizes to E's)."""
    mus, logvars = [], []
    for chunk in images.split(batch):
        chunk = resize_for_encoder(chunk, encoder.img_resolution)
        enabled = amp_dtype is not None and amp_dtype != torch.float32
        with torch.autocast(device_type=chunk.device.type, dtype=amp_dtype if enabled else None, enabled=enabled):
            mu, logvar = encoder(chunk)
        mus.append(mu.float())
        logvars.append(logvar.float())
    return torch.cat(mus), torch.cat(logvars)


def resize_for_encoder(images, resolution):
    """Area-resize NCHW images to resolution x resolution (the encoder's input), as official ID-GAN."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    if images.shape[-1] % resolution == 0 and images.shape[-2] % resolution == 0:
        factor = images.shape[-1] // resolution
        return torch.nn.functional.avg_pool2d(images, kernel_size=factor)  # exact area average, cheapest
    return torch.nn.functional.interpolate(images, size=(resolution, resolution), mode='area')


@persistence.persistent_class
class CodeMappingNetwork(torch.nn.Module):
    """StyleGAN2's mapping MLP that leaves the first `code_dim` inputs unnormalised (module docstring).

    The layers and the w_avg tracker are an ordinary `MappingNetwork` built with the same options
    (`self.net`), so everything but the input normalisation is the host's.
    """

    def __init__(self, z_dim, c_dim, w_dim, num_ws, code_dim=0, **mapping_kwargs):
        super().__init__()
        from networks.stylegan2 import MappingNetwork  # construction only; snapshots carry the class
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.code_dim = int(code_dim)
        if not 0 <= self.code_dim <= z_dim:
            raise ValueError(f'code_dim={code_dim} must lie between 0 and z_dim={z_dim}.')
        self.net = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=num_ws, **mapping_kwargs)
        self.num_layers = self.net.num_layers
        self.w_avg_beta = self.net.w_avg_beta

    @property
    def w_avg(self):
        return self.net.w_avg

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False, update_emas=None):
        if update_emas is not None:
            skip_w_avg_update = not update_emas
        net = self.net
        with torch.autocast(device_type=z.device.type, enabled=False):  # fp32 like the host's mapping
            misc.assert_shape(z, [None, self.z_dim])
            z = z.to(torch.float32)
            code, nuisance = z[:, :self.code_dim], z[:, self.code_dim:]
            if nuisance.shape[1] > 0:
                nuisance = nuisance * (nuisance.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
            x = torch.cat([code, nuisance], dim=1)
            if self.c_dim > 0:
                misc.assert_shape(c, [None, self.c_dim])
                y = net.embed(c.to(torch.float32))
                x = torch.cat([x, y * (y.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()], dim=1)
            for idx in range(net.num_layers):
                x = getattr(net, f'fc{idx}')(x)
            if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
                net.w_avg.copy_(x.detach().mean(dim=0).lerp(net.w_avg, self.w_avg_beta))
            if self.num_ws is not None:
                x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
            if truncation_psi != 1:
                if self.num_ws is None or truncation_cutoff is None:
                    x = net.w_avg.lerp(x, truncation_psi)
                else:
                    head = net.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                    x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x
