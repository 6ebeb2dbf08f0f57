"""Why do fd_oracle, kid_oracle and pr_oracle disagree? Split each into its parts for several networks.

    OMP_NUM_THREADS=1 python experiments/fidelity_breakdown.py --data=dsprites \\
        --network=vae=runs/x/vae-snapshot-000020.pkl --network=idgan=runs/y/network-snapshot-000020.pkl

For every network, the same oracle features as the fidelity metrics (10 000 real, 10 000 generated,
seed 0, scaled by the real features' RMS) and:
- FD = ||mu_g - mu_r||^2 + Tr(S_g + S_r - 2 (S_g S_r)^1/2): the mean part and the covariance part;
- KID = E k(g, g') + E k(r, r') - 2 E k(g, r) with k(x, y) = (x.y / d + 1)^3, each expectation
  (unbiased, over the same 100 subsets of 1 000 as kid_oracle), and the mean of ||x||^2 / d per set,
  since the cubic kernel grows with the third power of the feature norms;
- KID again with every feature vector rescaled to the real set's mean norm (direction only), which
  tells whether a difference in norm alone drives the kernel distance;
- precision / recall as pr_oracle.
Writes a JSON (``--json``) and prints one table.
"""

import os
import sys
import time

import click
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from idgan_vs_vae import machine_record, repo_relative, write_json_atomic  # noqa: E402

from metrics import fidelity  # noqa: E402


def kernel_parts(real, gen, num_subsets=100, max_subset_size=1000, seed=0):
    """(E k(g,g'), E k(r,r'), E k(g,r)) over the subsets kid_oracle draws for `seed`; kid = kgg + krr - 2 kgr."""
    return fidelity.kernel_terms(real, gen, num_subsets, max_subset_size, np.random.RandomState(seed))


def frechet_parts(real, gen):
    """(mean part, covariance part) of the Fréchet distance; their sum is fidelity.frechet_distance."""
    mu_r, sigma_r = fidelity.mean_cov(real)
    mu_g, sigma_g = fidelity.mean_cov(gen)
    total = fidelity.frechet_distance(mu_g, sigma_g, mu_r, sigma_r)
    mean_part = float(np.square(mu_g - mu_r).sum())
    return mean_part, total - mean_part


def to_real_norm(features, real):
    """Each row of `features` rescaled to the mean feature norm of `real` (keeps only directions)."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12) * np.linalg.norm(real, axis=1).mean()


def breakdown(real, gen, nhood_size=3, seed=0):
    """Every part for one generated feature set against the real one (both already RMS-scaled)."""
    kgg, krr, kgr = kernel_parts(real, gen, seed=seed)
    fd_mean, fd_cov = frechet_parts(real, gen)
    dim = real.shape[1]
    precision, recall = fidelity.precision_recall(real, gen, nhood_size)
    return dict(fd=fd_mean + fd_cov, fd_mean_part=fd_mean, fd_cov_part=fd_cov,
                kid=kgg + krr - 2 * kgr, kid_kgg=kgg, kid_krr=krr, kid_kgr=kgr,
                sq_norm_over_d_gen=float(np.mean(np.sum(gen ** 2, axis=1)) / dim),
                sq_norm_over_d_real=float(np.mean(np.sum(real ** 2, axis=1)) / dim),
                kid_directions_only=fidelity.kernel_distance(to_real_norm(real, real), to_real_norm(gen, real),
                                                             random_state=np.random.RandomState(seed)),
                precision=precision, recall=recall)


def _features(network_pkl, data, num, seed):
    """RMS-scaled oracle features (real, generated) as the fidelity metrics compute them."""
    from dnnlib.progress import Progress
    from metrics import detectors, feature_cache
    from metrics.generative import generative_model
    from metrics.metric_main import MetricOptions
    from metrics.oracle import load_oracle
    opts = MetricOptions(network_pkl=network_pkl, data=data, seed=seed)
    dataset = opts.open_dataset()
    detector = detectors.OracleDetector(load_oracle(dataset))
    real = feature_cache.real_features(dataset, detector, num, capture='features', seed=seed, batch_size=256,
                                       desc='real')['features']
    model = generative_model(opts.snapshot, dataset=dataset)
    with Progress(num, desc=f'{os.path.basename(network_pkl)} generated', unit='img', interval=10.0) as progress:
        gen = fidelity.generated_features(model, detector, num, seed, 256, progress)
    scale = 1.0 / np.sqrt(max(float(np.mean(np.square(real, dtype=np.float64))), 1e-30))
    return real * scale, gen * scale


def _named(ctx, param, values):
    out = []
    for value in values:
        name, sep, path = value.partition('=')
        if not sep or not name or not os.path.isfile(path):
            raise click.BadParameter(f'{value!r}: write NAME=PATH with an existing snapshot file.', param_hint='--network')
        out.append((name, path))
    return out


@click.command()
@click.option('--network', 'networks', help='NAME=snapshot .pkl (GAN or VAE); repeat', multiple=True, required=True,
              callback=_named)
@click.option('--data', help='Built-in dataset with an oracle', type=click.Choice(['dsprites', 'shapes3d']),
              default='dsprites', show_default=True)
@click.option('--num', help='Real and generated images', type=click.IntRange(min=100), default=10000, show_default=True)
@click.option('--seed', type=int, default=0, show_default=True)
@click.option('--json', 'json_path', help='Result file', metavar='PATH')
def main(networks, data, num, seed, json_path):
    """Split fd_oracle / kid_oracle of each network into parts (see the module docstring)."""
    start = time.time()
    rows = {}
    for name, path in networks:
        real, gen = _features(path, data, num, seed)
        rows[name] = dict(network=os.path.abspath(path), **breakdown(real, gen, seed=seed))
    keys = ['fd', 'fd_mean_part', 'fd_cov_part', 'kid', 'kid_kgg', 'kid_krr', 'kid_kgr', 'sq_norm_over_d_gen',
            'sq_norm_over_d_real', 'kid_directions_only', 'precision', 'recall']
    print('| network | ' + ' | '.join(keys) + ' |')
    print('| --- |' + ' ---: |' * len(keys))
    for name, row in rows.items():
        print(f'| {name} | ' + ' | '.join(f'{row[k]:.3f}' for k in keys) + ' |')
    result = dict(command='python experiments/fidelity_breakdown.py ' + ' '.join(sys.argv[1:]), data=data,
                  num=num, seed=seed, wall_minutes=round((time.time() - start) / 60, 1), rows=rows,
                  machine=machine_record())
    if json_path:
        write_json_atomic(json_path, repo_relative(result))
        print(f'Wrote {json_path}')


if __name__ == '__main__':
    main()
