"""Generative models as the generator-side and fidelity metrics see them: codes in, images out.

    model = generative_model(snapshot, device='cpu', dataset=training_set)
    for codes, images in model.iterate(num=10000, seed=0, batch_size=256):
        ...   # codes float32 [n, code_dim] (CPU), images float32 [n, C, H, W] in [-1, 1] on `device`

- GAN snapshots (`G_ema`, else `G`): latents come from the snapshot's sampler under `latent`
  (a plain N(0, I) of width `G.z_dim` when there is none, e.g. official StyleGAN2-ADA pickles);
  images are `G(z, c)` with per-pixel noise drawn at random, as StyleGAN2-ADA's metrics do, and a
  uniformly random one-hot class `c` for conditional generators. The code is the sampler's `code`
  tensor ([N, code_dim]; categorical groups are one column holding the category index, continuous
  codes their value). **(our choice)** Samplers without `code` (plain StyleGAN2) use the first
  `num_z_codes` dimensions of `z` (default 10) as their code: z has no designated factors, so this
  is the entangled baseline the disentangled generators should beat.
- VAE snapshots (`Dec`, with `E`): images are the decoder's mean `Dec.to_image(Dec(code))`.
  **(our choice)** Codes come by default from the *aggregate posterior* q(code) of the training
  data, as in ID-GAN's generator: `bank_size` (10 000) random training images are encoded once
  into (mu, log-variance), and a sample picks a row and draws mu + sigma * eps. The VAE decoder
  and the ID-GAN generator are then compared on the same code distribution.
  `vae_codes='prior'` draws codes from N(0, I) instead.
Sampling is seeded: the same seed gives the same codes and images (noise included).
"""

import contextlib

import numpy as np
import torch

from metrics.ground_truth import MetricError

DEFAULT_NUM_Z_CODES = 10
DEFAULT_BANK_SIZE = 10000

# ----------------------------------------------------------------------------


@contextlib.contextmanager
def seeded_torch(seed, device):
    """Run a block with the global torch RNGs (CPU and `device`) seeded, restoring them afterwards."""
    device = torch.device(device)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == 'cuda' else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


class GenerativeModel:
    """Base class: subclasses set the attributes and implement `_sample(num, generator)`."""

    kind = ''
    code_source = ''           # where the codes come from: 'code', 'z', 'posterior', 'prior'
    code_dim = 0
    img_resolution = 0
    img_channels = 0

    def __init__(self, device):
        self.device = torch.device(device)

    def _sample(self, num, generator):  # -> (codes float [num, code_dim], images float [num, C, H, W])
        raise NotImplementedError

    @torch.no_grad()
    def iterate(self, num, seed=0, batch_size=64):
        """Yields (codes float32 CPU [n, code_dim], images float32 [n, C, H, W] in [-1, 1]) batches."""
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        with seeded_torch(seed, self.device):
            for start in range(0, int(num), int(batch_size)):
                codes, images = self._sample(min(int(batch_size), int(num) - start), generator)
                yield codes.detach().float().cpu(), images.detach().float().clamp(-1, 1)

    def describe(self):
        return f'{self.kind} ({self.img_resolution}x{self.img_resolution}x{self.img_channels}), ' \
               f'{self.code_dim} code dimensions from {self.code_source}'


class GANModel(GenerativeModel):
    kind = 'GAN'

    def __init__(self, snapshot, device='cpu', num_z_codes=DEFAULT_NUM_Z_CODES):
        super().__init__(device)
        G = snapshot.get('G_ema', snapshot.get('G'))
        self.G = G.eval().requires_grad_(False).to(self.device)
        sampler = snapshot.get('latent')
        if sampler is None:
            from training.latent import GaussianLatent
            sampler = GaussianLatent(z_dim=G.z_dim)
        self.sampler = sampler.eval().to(self.device)
        self.img_resolution, self.img_channels = int(G.img_resolution), int(G.img_channels)
        self.c_dim = int(getattr(G, 'c_dim', 0))
        probe = self.sampler.sample(2, device=self.device)
        if probe.get('code') is not None:
            self.code_source = 'code'
            self.code_dim = int(probe.code.reshape(2, -1).shape[1])
        else:
            self.code_source = 'z'
            self.code_dim = min(int(num_z_codes), int(probe.z.shape[1]))
            if self.code_dim < 1:
                raise MetricError(f'num_z_codes={num_z_codes} must be at least 1.')

    def _sample(self, num, generator):
        latents = self.sampler.sample(num, device=self.device, generator=generator)
        c = torch.zeros([num, self.c_dim], device=self.device)
        if self.c_dim > 0:
            classes = torch.randint(self.c_dim, [num], device=self.device, generator=generator)
            c[torch.arange(num, device=self.device), classes] = 1
        images = self.G(latents.z, c)
        codes = latents.code.reshape(num, -1) if self.code_source == 'code' else latents.z[:, :self.code_dim]
        return codes, images


class VAEModel(GenerativeModel):
    kind = 'VAE decoder'

    def __init__(self, snapshot, device='cpu', dataset=None, vae_codes='posterior', bank_size=DEFAULT_BANK_SIZE,
                 bank_seed=0):
        super().__init__(device)
        self.Dec = snapshot['Dec'].eval().requires_grad_(False).to(self.device)
        if not callable(getattr(self.Dec, 'to_image', None)):
            raise MetricError('The VAE decoder has no to_image(); metrics need its mean image in [-1, 1].')
        self.E = snapshot.get('E')
        self.img_resolution, self.img_channels = int(self.Dec.img_resolution), int(self.Dec.img_channels)
        self.code_dim = int(self.Dec.code_dim)
        if vae_codes not in ('posterior', 'prior'):
            raise MetricError(f'vae_codes={vae_codes!r} is not a code distribution; use "posterior" or "prior".')
        self.code_source = vae_codes
        self.bank_mu = self.bank_logvar = None
        if vae_codes == 'posterior':
            if self.E is None or dataset is None:
                raise MetricError('Sampling a VAE from its aggregate posterior needs its encoder E and the training '
                                  'data; pass --data or use vae_codes="prior".')
            self._encode_bank(dataset, int(bank_size), int(bank_seed))

    @torch.no_grad()
    def _encode_bank(self, dataset, bank_size, bank_seed):
        from metrics.representation import images_to_network_input
        E = self.E.eval().requires_grad_(False).to(self.device)
        count = min(bank_size, len(dataset))
        indices = np.sort(np.random.RandomState(bank_seed).choice(len(dataset), size=count, replace=False))
        mus, logvars = [], []
        for start in range(0, count, 256):
            images = np.stack([image for image, _label in dataset.__getitems__(list(indices[start:start + 256]))])
            x = images_to_network_input(images, E.img_resolution, E.img_channels, self.device)
            mu, logvar = E(x)[:2]
            mus.append(mu.float())
            logvars.append(logvar.float())
        self.bank_mu, self.bank_logvar = torch.cat(mus), torch.cat(logvars)

    def _sample(self, num, generator):
        eps = torch.randn([num, self.code_dim], device=self.device, generator=generator)
        if self.code_source == 'prior':
            codes = eps
        else:
            rows = torch.randint(len(self.bank_mu), [num], device=self.device, generator=generator)
            codes = self.bank_mu[rows] + torch.exp(0.5 * self.bank_logvar[rows]) * eps
        return codes, self.Dec.to_image(self.Dec(codes))


def generative_model(snapshot, device='cpu', dataset=None, num_z_codes=DEFAULT_NUM_Z_CODES, vae_codes='posterior',
                     bank_size=DEFAULT_BANK_SIZE):
    """The GenerativeModel of a snapshot dict (GAN: G_ema/G; VAE: Dec), or a GenerativeModel as is."""
    if isinstance(snapshot, GenerativeModel):
        return snapshot
    if not isinstance(snapshot, dict):
        raise MetricError(f'Expected a snapshot dict, got {type(snapshot).__name__}.')
    if snapshot.get('G_ema') is not None or snapshot.get('G') is not None:
        return GANModel(snapshot, device=device, num_z_codes=num_z_codes)
    if snapshot.get('Dec') is not None:
        return VAEModel(snapshot, device=device, dataset=dataset, vae_codes=vae_codes, bank_size=bank_size)
    raise MetricError('The snapshot has no generator (G_ema or G) and no VAE decoder (Dec), which generator-side '
                      'and fidelity metrics need; pass a network-snapshot-*.pkl or vae-snapshot-*.pkl.')


def images_to_uint8(images):
    """float [-1, 1] -> uint8 [0, 255] with StyleGAN2-ADA's rounding (x * 127.5 + 128, clamped)."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)

