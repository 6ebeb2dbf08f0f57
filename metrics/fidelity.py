"""Fidelity: Fréchet distance, kernel distance (KID) and precision/recall over a feature detector.

    frechet_distance(mu_a, sigma_a, mu_b, sigma_b)            # ||mu_a - mu_b||^2 + Tr(Sa + Sb - 2 (Sa Sb)^1/2)
    kernel_distance(real, gen, num_subsets=100, max_subset_size=1000)
    precision_recall(real, gen, nhood_size=3)                  # Kynkäänniemi et al. 2019

Definitions follow StyleGAN2-ADA's metrics (own code; same formulas and sample counts):
- FD: Fréchet distance between Gaussians fitted to the two feature sets (unbiased covariances).
- KID: the unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged
  over `num_subsets` random pairs of subsets of min(n_real, n_gen, max_subset_size) points.
- Precision/recall: each set's manifold is the union of balls around its points whose radius is
  the distance to the k-th nearest other point (k = 3); precision is the fraction of generated
  points inside the real manifold, recall the fraction of real points inside the generated one.

Feature detectors (`metrics/detectors.py`) map images to features; real-data features or
statistics are cached on disk (metrics/feature_cache.py); the registry entries live in
METRIC_SPECS at the bottom and are evaluated by `run_metric`.
"""

import numpy as np
import scipy.linalg
import torch

import dnnlib
from dnnlib.progress import Progress
from metrics.ground_truth import MetricError

# ----------------------------------------------------------------------------
# The three distances, on numpy features [N, F].


def mean_cov(features):
    features = np.asarray(features, dtype=np.float64)
    if len(features) < 2:
        raise MetricError(f'A Fréchet distance needs at least 2 feature vectors per set, got {len(features)}.')
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix):
    values, vectors = scipy.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu_a, sigma_a, mu_b, sigma_b):
    """Squared mean distance plus Tr(Sa + Sb - 2 (Sa Sb)^1/2).

    Tr((Sa Sb)^1/2) is computed as the sum of the square roots of the eigenvalues of the symmetric
    Sa^1/2 Sb Sa^1/2 (a similar matrix), which stays exact when a covariance is singular, as it is
    for features that are always zero (dead ReLUs), where a general matrix square root is not.
    """
    mu_a, mu_b = np.atleast_1d(mu_a), np.atleast_1d(mu_b)
    sigma_a, sigma_b = np.atleast_2d(sigma_a), np.atleast_2d(sigma_b)
    root_a = _psd_sqrt((sigma_a + sigma_a.T) / 2)
    product = root_a @ sigma_b @ root_a
    trace_root = np.sqrt(np.clip(scipy.linalg.eigvalsh((product + product.T) / 2), 0, None)).sum()
    return float(np.square(mu_a - mu_b).sum() + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * trace_root)


def kernel_terms(real, gen, num_subsets=100, max_subset_size=1000, random_state=None):
    """(E k(g, g'), E k(r, r'), E k(g, r)) of the cubic kernel, unbiased, averaged over the KID subsets."""
    real, gen = np.asarray(real, dtype=np.float64), np.asarray(gen, dtype=np.float64)
    random_state = random_state if random_state is not None else np.random.RandomState(0)
    dim = real.shape[1]
    m = min(len(real), len(gen), int(max_subset_size))
    if m < 2:
        raise MetricError(f'KID needs at least 2 feature vectors per set, got {len(real)} real, {len(gen)} generated.')
    terms = np.zeros(3)
    for _ in range(int(num_subsets)):
        x = gen[random_state.choice(len(gen), m, replace=False)]
        y = real[random_state.choice(len(real), m, replace=False)]
        kxx = (x @ x.T / dim + 1) ** 3
        kyy = (y @ y.T / dim + 1) ** 3
        kxy = (x @ y.T / dim + 1) ** 3
        terms += [(kxx.sum() - np.trace(kxx)) / (m * (m - 1)), (kyy.sum() - np.trace(kyy)) / (m * (m - 1)),
                  kxy.mean()]
    return tuple(float(t) for t in terms / num_subsets)


def kernel_distance(real, gen, num_subsets=100, max_subset_size=1000, random_state=None):
    """KID: mean over subsets of the unbiased MMD^2 with the cubic polynomial kernel."""
    kgg, krr, kgr = kernel_terms(real, gen, num_subsets, max_subset_size, random_state)
    return kgg + krr - 2.0 * kgr


def _kth_neighbour_radii(features, nhood_size, batch_size):
    radii = []
    for start in range(0, len(features), batch_size):
        distances = torch.cdist(features[start:start + batch_size], features)
        radii.append(distances.kthvalue(nhood_size + 1, dim=1).values)   # +1: each point is its own nearest
    return torch.cat(radii)


def _inside_fraction(reference, radii, queries, batch_size):
    inside = []
    for start in range(0, len(queries), batch_size):
        distances = torch.cdist(queries[start:start + batch_size], reference)
        inside.append((distances <= radii[None, :]).any(dim=1))
    return float(torch.cat(inside).double().mean())


def precision_recall(real, gen, nhood_size=3, batch_size=2500):
    """(precision, recall) of generated against real features (improved precision and recall)."""
    real = torch.as_tensor(np.asarray(real), dtype=torch.float32)
    gen = torch.as_tensor(np.asarray(gen), dtype=torch.float32)
    if min(len(real), len(gen)) <= nhood_size:
        raise MetricError(f'Precision/recall with nhood_size={nhood_size} needs more than {nhood_size} feature '
                          f'vectors per set, got {len(real)} real, {len(gen)} generated.')
    real_radii = _kth_neighbour_radii(real, nhood_size, batch_size)
    gen_radii = _kth_neighbour_radii(gen, nhood_size, batch_size)
    return (_inside_fraction(real, real_radii, gen, batch_size),
            _inside_fraction(gen, gen_radii, real, batch_size))


# ----------------------------------------------------------------------------
# Registry: which detector, which distance, how many samples.

INCEPTION_URL = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt'
VGG16_URL = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt'

# num_real=None means every image of the dataset ("_full"), as StyleGAN2-ADA's names say.
METRIC_SPECS = dict(
    fid50k_full=dnnlib.EasyDict(kind='fd', detector='url', options=dict(
        num_real=None, num_gen=50000, detector_url=INCEPTION_URL, batch_size=64)),
    kid50k_full=dnnlib.EasyDict(kind='kid', detector='url', options=dict(
        num_real=1000000, num_gen=50000, detector_url=INCEPTION_URL, batch_size=64, num_subsets=100,
        max_subset_size=1000)),
    pr50k3_full=dnnlib.EasyDict(kind='pr', detector='url', options=dict(
        num_real=200000, num_gen=50000, detector_url=VGG16_URL, batch_size=64, nhood_size=3)),
    fd_oracle=dnnlib.EasyDict(kind='fd', detector='oracle', options=dict(
        num_real=10000, num_gen=10000, batch_size=256)),
    kid_oracle=dnnlib.EasyDict(kind='kid', detector='oracle', options=dict(
        num_real=10000, num_gen=10000, batch_size=256, num_subsets=100, max_subset_size=1000)),
    pr_oracle=dnnlib.EasyDict(kind='pr', detector='oracle', options=dict(
        num_real=10000, num_gen=10000, batch_size=256, nhood_size=3)),
)


def generated_features(model, detector, num, seed, batch_size, progress, shard=None):
    """Detector features [num, D] of `num` seeded samples (rendered in parts by the ranks of `shard`)."""
    from metrics.sharding import SINGLE_PROCESS
    shard = shard or SINGLE_PROCESS
    features = []
    for _codes, images in shard.iterate(model, num, seed=seed, batch_size=batch_size):
        features.append(detector(images).double().cpu().numpy())
        progress.update(len(images))
    return shard.gather(np.concatenate(features))


def run_metric(opts, metric, options, model_kwargs):
    """Evaluate the fidelity metric `metric` of METRIC_SPECS for MetricOptions `opts`."""
    from metrics import detectors, feature_cache
    from metrics.generative import generative_model
    spec = METRIC_SPECS[metric]
    dataset = opts.open_dataset()
    if spec.detector == 'oracle':
        from metrics.oracle import load_oracle
        if not getattr(dataset, 'has_factors', False):
            raise MetricError(f'Dataset {dataset.name!r} has no ground-truth factors, so it has no factor oracle for '
                              f'{metric}; use --data=dsprites or shapes3d, or fid50k_full with the Inception detector.')
        oracle = load_oracle(dataset, device=opts.device, verbose=opts.progress,
                             **dict(opts.metric_kwargs.get('oracle_kwargs') or {}))
        detector = detectors.OracleDetector(oracle)
    else:
        detector = detectors.get_torchscript_detector(options['detector_url'], device=opts.device,
                                                      verbose=opts.progress)
    model = generative_model(opts.snapshot, device=opts.device, dataset=dataset, **model_kwargs)
    num_real = len(dataset) if options['num_real'] is None else min(int(options['num_real']), len(dataset))
    capture = 'mean_cov' if spec.kind == 'fd' else 'features'
    real = feature_cache.real_features(dataset, detector, num_real, capture=capture, seed=opts.seed,
                                       batch_size=options['batch_size'], cache=opts.cache, progress=opts.progress,
                                       desc=f'{metric} real')
    with Progress(opts.shard.share(options['num_gen']), desc=f'{metric} generated', unit='img', enabled=opts.progress,
                  interval=10.0) as progress:
        gen = generated_features(model, detector, int(options['num_gen']), opts.seed, options['batch_size'], progress,
                                 opts.shard)
    if spec.detector == 'oracle':
        # Oracle features have an arbitrary scale; dividing them by their RMS over the real images makes
        # x.y / d of order 1, as for Inception features, which KID's cubic kernel assumes (and FD values
        # comparable between oracles). Precision/recall do not depend on the scale.
        mean_square = (np.trace(real['sigma']) + np.sum(real['mu'] ** 2)) / len(real['mu']) if 'mu' in real \
            else float(np.mean(np.square(real['features'], dtype=np.float64)))
        scale = 1.0 / np.sqrt(max(mean_square, 1e-30))
        real = {key: value * (scale ** 2 if key == 'sigma' else scale) for key, value in real.items()}
        gen = gen * scale
    if spec.kind == 'fd':
        return {metric: frechet_distance(*mean_cov(gen), real['mu'], real['sigma'])}
    if spec.kind == 'kid':
        return {metric: kernel_distance(real['features'], gen, options['num_subsets'], options['max_subset_size'],
                                        np.random.RandomState(opts.seed))}
    precision, recall = precision_recall(real['features'], gen, options['nhood_size'])
    return {f'{metric}_precision': precision, f'{metric}_recall': recall}
