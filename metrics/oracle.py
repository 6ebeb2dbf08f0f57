"""Factor oracle: a supervised classifier of a ground-truth dataset's true factors.

    from metrics.oracle import load_oracle
    oracle = load_oracle('dsprites')            # trained once (a few CPU minutes), then cached on disk
    oracle.accuracy                             # held-out accuracy per factor, e.g. {'shape': 0.99, ...}
    labels = oracle.predict(images)             # int64 [N, num_factors]; images NCHW in [-1, 1] or uint8
    feats = oracle.features(images)             # float32 [N, 256]: penultimate features (fd_oracle)

The oracle labels generated images for the generator-side disentanglement metrics (`mig_gen`,
`dci_gen`) and provides the feature space of the offline fidelity metrics (`fd_oracle`).

Architecture (our choice): the ID-GAN VAE encoder's trunk (docs/VAE.md) — four 4x4
stride-2 convolutions with 32, 32, 64, 64 channels, batch normalisation and ReLU, a 256-wide fully
connected layer (the features), then one linear softmax head per factor. Batch normalisation
makes shape and scale learnable within a CPU budget (dSprites after 800 steps at lr 3e-3,
held-out accuracy without/with it: shape 0.55/0.97, scale 0.49/0.82). Training: Adam (lr 3e-3,
decayed linearly to zero), summed cross-entropy over the heads, `num_steps` minibatches of 64
drawn from a fixed random subset of `num_train` images; the held-out accuracy is measured on
`num_heldout` further images that the oracle never trains on. Everything is seeded, so the same
settings give the same oracle.

Some factors cannot be recovered from the image and the accuracy says so: in dSprites the
orientation of the square repeats every 90 degrees and of the ellipse every 180, and the grid's
first and last orientations (0 and 2 pi) render identically. `accuracy_near` (prediction at most
one step off) shows how much of the remaining error is off-by-one on ordinal factors.

Cache: `<dnnlib cache>/oracles/oracle-<dataset>-<resolution>-<key>.pkl` (or `cache_dir`), where
`<key>` hashes the dataset's name, size, resolution, channels, factor names and sizes and every
training setting; it is written atomically, so concurrent runs at worst train twice.
"""

import hashlib
import json
import os
import pickle
import time

import numpy as np
import torch
import torch.nn.functional as F

import dnnlib
from dnnlib.progress import Progress, format_time
from metrics.ground_truth import MetricError
from metrics.representation import images_to_network_input
from torch_utils import misc, persistence

ORACLE_VERSION = 3

DEFAULT_TRAIN_KWARGS = dict(num_train=60000, num_heldout=5000, num_steps=2500, batch_size=64, lr=3e-3,
                            feature_dim=256, seed=0)

# ----------------------------------------------------------------------------


@persistence.persistent_class
class FactorOracle(torch.nn.Module):
    """CNN with one softmax head per factor; see the module docstring."""

    def __init__(self, factor_names, factor_sizes, img_resolution=64, img_channels=1, feature_dim=256):
        super().__init__()
        self.factor_names = tuple(str(name) for name in factor_names)
        self.factor_sizes = tuple(int(size) for size in factor_sizes)
        self.img_resolution = int(img_resolution)
        self.img_channels = int(img_channels)
        self.feature_dim = int(feature_dim)
        if self.img_resolution < 16 or self.img_resolution & (self.img_resolution - 1):
            raise MetricError(f'The oracle needs a power-of-two resolution of at least 16, got {self.img_resolution}.')
        widths = [self.img_channels, 32, 32, 64, 64]
        self.convs = torch.nn.ModuleList([torch.nn.Conv2d(cin, cout, 4, stride=2, padding=1)
                                          for cin, cout in zip(widths[:-1], widths[1:])])
        self.norms = torch.nn.ModuleList([torch.nn.BatchNorm2d(cout) for cout in widths[1:]])
        spatial = self.img_resolution // 16
        self.fc = torch.nn.Linear(64 * spatial * spatial, self.feature_dim)
        self.heads = torch.nn.Linear(self.feature_dim, sum(self.factor_sizes))
        self.accuracy = {}          # factor name -> held-out accuracy, set by train_oracle()
        self.accuracy_near = {}     # factor name -> held-out fraction at most one step off
        self.train_info = {}        # settings, key, training time

    @property
    def num_factors(self):
        return len(self.factor_sizes)

    def _features(self, x):
        misc.assert_shape(x, [None, self.img_channels, self.img_resolution, self.img_resolution])
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)))
        return F.relu(self.fc(x.flatten(1)))

    def forward(self, x):
        """Logits per factor: a list of [N, size] tensors (x float [-1, 1] at the oracle's shape)."""
        return list(self.heads(self._features(x)).split(list(self.factor_sizes), dim=1))

    def _batched(self, images, fn, batch_size):
        device = next(self.parameters()).device
        outputs = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x = images_to_network_input(images[start:start + batch_size], self.img_resolution, self.img_channels, device)
                outputs.append(fn(x))
        if not outputs:
            return None
        out_device = images.device if isinstance(images, torch.Tensor) else torch.device('cpu')
        return torch.cat(outputs).to(out_device)

    def predict(self, images, batch_size=512):
        """int64 [N, num_factors]: the most likely index of every factor."""
        out = self._batched(images, lambda x: torch.stack([l.argmax(dim=1) for l in self(x)], dim=1), batch_size)
        return out if out is not None else torch.zeros([0, self.num_factors], dtype=torch.int64)

    def features(self, images, batch_size=512):
        """float32 [N, feature_dim]: penultimate activations, the feature space of fd_oracle."""
        out = self._batched(images, self._features, batch_size)
        return out if out is not None else torch.zeros([0, self.feature_dim])

    def describe(self):
        """One line per factor: held-out accuracy, off-by-at-most-one rate and chance level."""
        lines = []
        for name, size in zip(self.factor_names, self.factor_sizes):
            acc = self.accuracy.get(name, float('nan'))
            near = self.accuracy_near.get(name, float('nan'))
            lines.append(f'  {name:<14} {size:3d} values  held-out accuracy {acc:.3f}  '
                         f'(within one step {near:.3f}, chance {1.0 / size:.3f})')
        return '\n'.join(lines)


# ----------------------------------------------------------------------------
# Data access: built-in names, training.dataset.Dataset objects and procedural ImageSources.


class _FactorImages:
    """Uniform `images(indices)` / `factors(indices)` view of a dataset with ground-truth factors."""

    def __init__(self, dataset):
        if isinstance(dataset, str):
            from training import dataset as dataset_module
            try:
                dataset = dataset_module.open_dataset(dataset)
            except dataset_module.DatasetError as err:
                raise MetricError(str(err)) from None
        self.dataset = dataset
        self.name = str(getattr(dataset, 'name', type(dataset).__name__))
        if not getattr(dataset, 'has_factors', False):
            raise MetricError(f'Dataset {self.name!r} has no ground-truth factors, which the factor oracle needs; '
                              f'use --data=dsprites or shapes3d, or a dataset.json with "factors".')
        self.factor_names = tuple(dataset.factor_names)
        self.factor_sizes = tuple(int(size) for size in dataset.factor_sizes)
        self.is_source = hasattr(dataset, 'index_to_factors')       # training.procedural.ImageSource
        if self.is_source:
            self.num_images, self.resolution, self.channels = dataset.num_images, dataset.resolution, dataset.num_channels
        else:
            self.num_images, self.resolution, self.channels = len(dataset), dataset.resolution, dataset.num_channels

    def images(self, indices):
        if self.is_source:
            return np.asarray(self.dataset.images(indices), dtype=np.uint8)
        return np.stack([image for image, _label in self.dataset.__getitems__(list(indices))])

    def factors(self, indices):
        if self.is_source:
            return np.asarray(self.dataset.index_to_factors(indices), dtype=np.int64)
        return np.stack([self.dataset.get_factors(int(idx)) for idx in indices]).astype(np.int64)


def _settings(train_kwargs):
    unknown = sorted(set(train_kwargs) - set(DEFAULT_TRAIN_KWARGS))
    if unknown:
        raise MetricError(f'Unknown oracle training option(s) {", ".join(unknown)}; valid: '
                          f'{", ".join(sorted(DEFAULT_TRAIN_KWARGS))}.')
    settings = dict(DEFAULT_TRAIN_KWARGS, **train_kwargs)
    for name in ('num_train', 'num_heldout', 'num_steps', 'batch_size', 'feature_dim'):
        settings[name] = int(settings[name])
        if settings[name] < 1:
            raise MetricError(f'Oracle option {name}={settings[name]} must be at least 1.')
    settings['lr'] = float(settings['lr'])
    settings['seed'] = int(settings['seed'])
    return settings


def oracle_key(data, settings):
    """Hash of everything that determines the trained oracle."""
    identity = dict(version=ORACLE_VERSION, dataset=data.name, num_images=data.num_images,
                    resolution=data.resolution, channels=data.channels, factor_names=list(data.factor_names),
                    factor_sizes=list(data.factor_sizes), settings=settings)
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode('utf-8')).hexdigest()[:16]


def train_oracle(data, settings, device='cpu', verbose=True):
    """Train a FactorOracle on `data` (_FactorImages) and measure its held-out accuracy."""
    device = torch.device(device)
    num_train = min(settings['num_train'], data.num_images - 1)
    num_heldout = min(settings['num_heldout'], data.num_images - num_train)
    if num_train < 1 or num_heldout < 1:
        raise MetricError(f'Dataset {data.name!r} has {data.num_images} images; the oracle needs at least 2 '
                          f'(training and held-out).')
    rnd = np.random.RandomState(settings['seed'])
    order = rnd.permutation(data.num_images)
    train_idx, heldout_idx = order[:num_train], order[num_train:num_train + num_heldout]
    start = time.time()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings['seed'])
        oracle = FactorOracle(data.factor_names, data.factor_sizes, img_resolution=data.resolution,
                              img_channels=data.channels, feature_dim=settings['feature_dim']).to(device)
    opt = torch.optim.Adam(oracle.parameters(), lr=settings['lr'])
    oracle.train()
    with Progress(settings['num_steps'], desc=f'oracle {data.name}', unit='step', enabled=verbose,
                  interval=10.0) as progress:
        for step in range(settings['num_steps']):
            # Linear decay to zero: the last steps settle the fine position classes (2 pixels apart in dSprites).
            for group in opt.param_groups:
                group['lr'] = settings['lr'] * (1.0 - step / settings['num_steps'])
            batch = np.sort(train_idx[rnd.randint(num_train, size=settings['batch_size'])])
            x = images_to_network_input(data.images(batch), data.resolution, data.channels, device)
            y = torch.as_tensor(data.factors(batch), device=device)
            loss = sum(F.cross_entropy(logits, y[:, k]) for k, logits in enumerate(oracle(x)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            progress.update(1)
    oracle.eval().requires_grad_(False)

    correct = np.zeros(oracle.num_factors)
    near = np.zeros(oracle.num_factors)
    for begin in range(0, num_heldout, 1000):
        batch = np.sort(heldout_idx[begin:begin + 1000])
        predicted = oracle.predict(data.images(batch)).numpy()
        error = np.abs(predicted - data.factors(batch))
        correct += (error == 0).sum(axis=0)
        near += (error <= 1).sum(axis=0)
    oracle.accuracy = {name: float(c / num_heldout) for name, c in zip(oracle.factor_names, correct)}
    oracle.accuracy_near = {name: float(c / num_heldout) for name, c in zip(oracle.factor_names, near)}
    oracle.train_info = dict(settings, dataset=data.name, num_train=num_train, num_heldout=num_heldout,
                             train_time=time.time() - start)
    return oracle


def load_oracle(dataset, device='cpu', cache_dir=None, verbose=True, **train_kwargs):
    """The FactorOracle of `dataset` (built-in name or dataset with factors), trained once and cached.

    `train_kwargs` override DEFAULT_TRAIN_KWARGS (num_train, num_heldout, num_steps, batch_size,
    lr, feature_dim, seed); they are part of the cache key. `cache_dir=False` disables the cache.
    """
    data = _FactorImages(dataset)
    settings = _settings(train_kwargs)
    key = oracle_key(data, settings)
    path = None
    if cache_dir is not False:
        directory = cache_dir if cache_dir is not None else dnnlib.util.make_cache_dir_path('oracles')
        safe_name = ''.join(ch if ch.isalnum() or ch in '-_' else '_' for ch in data.name)
        path = os.path.join(directory, f'oracle-{safe_name}-{data.resolution}-{key}.pkl')
        if os.path.isfile(path):
            try:
                with open(path, 'rb') as f:
                    oracle = pickle.load(f)
                if verbose:
                    print(f'Factor oracle for {data.name} loaded from {path}:\n{oracle.describe()}')
                return oracle.to(device)
            except (EOFError, pickle.UnpicklingError, AttributeError, ImportError) as err:
                if verbose:
                    print(f'Ignoring unreadable oracle cache {path} ({err}); training again.')
    if verbose:
        print(f'Training the factor oracle for {data.name} ({settings["num_steps"]} steps of '
              f'{settings["batch_size"]} images from {min(settings["num_train"], data.num_images - 1)})...')
    oracle = train_oracle(data, settings, device=device, verbose=verbose)
    oracle.train_info['key'] = key
    if verbose:
        print(f'Factor oracle for {data.name} trained in {format_time(oracle.train_info["train_time"])}:\n'
              f'{oracle.describe()}')
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        misc.atomic_pickle_dump(oracle.cpu(), path)
        oracle.to(device)
        if verbose:
            print(f'Cached at {path}')
    return oracle
