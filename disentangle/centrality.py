"""ModelCentrality (Lin et al., ICML 2020): unsupervised selection among trained models (docs/INFOGAN.md).

Every model is both a *generator of labelled data* and an *encoder*:

- GAN snapshots with codes (InfoGAN: `latent` + `Q`; ID-GAN: `latent` + `E`) render from their
  own code: `latent.sample()` gives the code, `latent.assemble(code, noise)` the generator input;
- VAE snapshots (`E`, `Dec`) decode codes drawn from the N(0, I) prior.

Model j renders `groups` groups of `group_size` images; in group m code column m mod k_j is
held at one value (the first sample's) while every other code and the noise are resampled; the
group's label is that column. It also renders `std_samples` free samples. Model i's encoder
scores model j's data with the FactorVAE score: per-dimension variances of i's codes on the free
samples, dimensions with std < 0.05 pruned, one vote per group (the dimension of smallest
variance relative to the global one, as metrics/factor_vae.py), a majority-vote classifier from
the first half of the groups, accuracy on the second half -> C[i, j]. The matrix is
symmetrised, (C + C^T) / 2, and a model's centrality is its mean over j != i; the medoid (highest
centrality) is selected.

Every model draws its codes and noise from the same seeded stream on its device (common random
numbers), so identical models render identical data and score identically. Each model's data is rendered once and streamed through every encoder, so memory stays at one
chunk of images and the cost is N renders + N^2 encodings of groups * group_size + std_samples
images.
"""

import numpy as np
import torch

from dnnlib.progress import Progress
from torch_utils import misc

DEFAULT_GROUPS = 500         # M and L of the paper
DEFAULT_GROUP_SIZE = 100
DEFAULT_STD_SAMPLES = 10000
PRUNE_THRESHOLD = 0.05       # as metrics/factor_vae.py and disentanglement_lib


class CentralityError(ValueError):
    """A model or option ModelCentrality cannot use (one sentence naming the fix)."""


def _to_uint8(images):
    return (images.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)   # stays on the device for the encoders


class SnapshotModel:
    """A snapshot as ModelCentrality sees it: `num_codes`, `device`, `sample`, `render`, `encode`."""

    def __init__(self, snapshot, name, device='cpu', batch=64):
        from metrics.representation import NetworkRepresentation
        self.name = name
        self.device = torch.device(device)
        self.batch = int(batch)
        encoder_key = 'Q' if snapshot.get('Q') is not None else 'E' if snapshot.get('E') is not None else None
        if encoder_key is None:
            raise CentralityError(f'{name} has no encoder (Q or E); ModelCentrality needs InfoGAN, ID-GAN or VAE '
                                  f'snapshots.')
        self.encoder = NetworkRepresentation(snapshot[encoder_key], device=device, kind=encoder_key)
        self.G = snapshot.get('G_ema', snapshot.get('G'))
        self.latent = snapshot.get('latent')
        self.Dec = snapshot.get('Dec')
        if self.G is not None:
            if self.latent is None or not hasattr(self.latent, 'assemble') or not hasattr(self.latent, 'code_dim'):
                raise CentralityError(f'{name} is a GAN without a code sampler (a plain StyleGAN2?); it cannot '
                                      f'render labelled data, so leave it out of --networks.')
            self.G = self.G.eval().requires_grad_(False).to(device)
            self.latent = self.latent.eval().to(device)
            self.kind = 'gan'
            self.num_codes = int(self.latent.code_dim)
        elif self.Dec is not None:
            self.Dec = self.Dec.eval().requires_grad_(False).to(device)
            self.kind = 'vae'
            self.num_codes = int(self.Dec.code_dim)
        else:
            raise CentralityError(f'{name} has neither a generator nor a decoder to render data from.')

    def sample(self, n, generator):
        """(codes [n, num_codes], rest) on this model's device: rest is a GAN's noise, None for a VAE.

        `generator` must live on this model's device (data_generator() makes one).
        """
        if self.kind == 'vae':
            device = misc.draw_device(self.device, generator)
            return torch.randn([n, self.num_codes], generator=generator, device=device), None
        out = self.latent.sample(n, device=self.device, generator=generator)
        return out.code, (out.noise if 'noise' in out else out.nuisance)

    @torch.no_grad()
    def render(self, codes, rest):
        """uint8 [n, C, H, W] images of codes (and noise), on this model's device."""
        images = []
        for start in range(0, codes.shape[0], self.batch):
            code = codes[start:start + self.batch].to(self.device)
            if self.kind == 'vae':
                images.append(_to_uint8(self.Dec.to_image(self.Dec(code))))
            else:
                z = self.latent.assemble(code, rest[start:start + self.batch].to(self.device)).z
                c = torch.zeros([z.shape[0], self.G.c_dim], device=self.device)
                images.append(_to_uint8(self.G(z, c, noise_mode='const')))
        return torch.cat(images)

    def encode(self, images):
        return self.encoder(images)


def data_generator(model, seed):
    """The seeded stream model `model` renders its data from, on its `device` (CPU for models without
    one). Common random numbers: every model on one device draws the same values."""
    return torch.Generator(device=getattr(model, 'device', 'cpu')).manual_seed(int(seed))


def labelled_groups(model, num_groups, group_size, generator):
    """Yield (label, codes [group_size, k], rest) for groups m = 0..num_groups-1: code m mod k held fixed."""
    for m in range(num_groups):
        label = m % model.num_codes
        codes, rest = model.sample(group_size, generator)
        codes[:, label] = codes[0, label]
        yield label, codes, rest


def factor_vae_from_variances(local_variances, labels, global_variances, num_labels,
                              prune_threshold=PRUNE_THRESHOLD):
    """FactorVAE score of votes: local variances [M, D] of M groups with labels [M]; global variances [D].

    The classifier (dimension -> most frequent label) comes from the first half of the groups, the
    accuracy from the second half, as metrics/factor_vae.py does with its train and eval votes.
    """
    active = np.sqrt(global_variances) >= prune_threshold
    if not active.any():
        return 0.0
    index = np.nonzero(active)[0]
    chosen = index[np.argmin(local_variances[:, index] / global_variances[index], axis=1)]
    labels = np.asarray(labels)
    half = len(labels) // 2
    votes = np.zeros([num_labels, len(global_variances)], dtype=np.int64)
    np.add.at(votes, (labels[:half], chosen[:half]), 1)
    classifier = np.argmax(votes, axis=0)
    return float(np.mean(classifier[chosen[half:]] == labels[half:]))


def cross_scores(models, num_groups=DEFAULT_GROUPS, group_size=DEFAULT_GROUP_SIZE, std_samples=DEFAULT_STD_SAMPLES,
                 seed=0, chunk_groups=8, verbose=True):
    """C [N, N]: C[i, j] = FactorVAE score of model i's encoder on model j's rendered data."""
    if num_groups < 2 * max(m.num_codes for m in models):
        raise CentralityError(f'--groups={num_groups} is too few: every code needs a group in both halves; use at '
                              f'least {2 * max(m.num_codes for m in models)}.')
    if group_size < 2 or std_samples < 2:
        raise CentralityError('--group-size and --std-samples must be at least 2 (variances need two samples).')
    n = len(models)
    scores = np.zeros([n, n])
    total = n * (num_groups * group_size + std_samples)
    with Progress(total, desc='ModelCentrality: render + encode', unit='img', enabled=verbose) as progress:
        for j, data_model in enumerate(models):
            generator = data_generator(data_model, seed)
            free = data_model.render(*data_model.sample(std_samples, generator))
            global_variances = [model.encode(free).var(axis=0, ddof=1) for model in models]
            progress.update(std_samples)
            labels, local = [], [[] for _ in models]
            groups = labelled_groups(data_model, num_groups, group_size, generator)
            for start in range(0, num_groups, chunk_groups):
                chunk = [next(groups) for _ in range(min(chunk_groups, num_groups - start))]
                images = data_model.render(torch.cat([g[1] for g in chunk]),
                                           None if chunk[0][2] is None else torch.cat([g[2] for g in chunk]))
                labels += [g[0] for g in chunk]
                for i, model in enumerate(models):
                    codes = model.encode(images).reshape(len(chunk), group_size, -1)
                    local[i].append(codes.var(axis=1, ddof=1))
                progress.update(len(chunk) * group_size)
            for i in range(n):
                scores[i, j] = factor_vae_from_variances(np.concatenate(local[i]), labels, global_variances[i],
                                                         data_model.num_codes)
    return scores


def centrality(scores):
    """(symmetric matrix (C + C^T) / 2, per-model mean similarity to the others, j != i)."""
    scores = np.asarray(scores, dtype=np.float64)
    symmetric = (scores + scores.T) / 2
    n = symmetric.shape[0]
    if n < 2:
        raise CentralityError('ModelCentrality compares models with each other; give at least 2 networks.')
    off_diagonal = symmetric.sum(axis=1) - np.diag(symmetric)
    return symmetric, off_diagonal / (n - 1)


def ranking(names, scores):
    """[(rank, name, centrality)] best first (ties keep the input order)."""
    _symmetric, values = centrality(scores)
    order = sorted(range(len(names)), key=lambda i: (-values[i], i))
    return [(rank + 1, names[i], float(values[i])) for rank, i in enumerate(order)]
