"""Metric speed: each disentanglement metric at disentanglement_lib's default sample sizes.

Examples:

    # every metric on a 10-dim continuous representation of dSprites factors (no rendering)
    python benchmarks/metrics.py

    # only DCI in one process (the default fits factors in as many worker processes as torch has
    # threads, at most one per factor), and with scikit-learn's trees for comparison
    python benchmarks/metrics.py --metrics=dci --workers=1
    python benchmarks/metrics.py --metrics=dci --trees=sklearn

The ground-truth data only samples factors (dSprites sizes 3, 6, 40, 32, 32); the representation
is a fixed function of them: the 5 scaled factor indices with small Gaussian noise, mixed by a
near-identity rotation, plus 5 pure-noise dimensions, so every code is continuous (10 000 distinct
values), as a VAE's posterior means are. The time is therefore the metric's own cost; add the
encoder's and the renderer's time (docs/PERFORMANCE.md, Datasets) for a real model.
"""

import os
import sys
import time

import click
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dnnlib.progress import format_time
from metrics import beta_vae, dci, factor_vae, mig, modularity_explicitness, sap, unsupervised
from metrics.ground_truth import GroundTruthData

DSPRITES_SIZES = (3, 6, 40, 32, 32)
METRICS = dict(factorvae=factor_vae.compute_factor_vae, betavae=beta_vae.compute_beta_vae, mig=mig.compute_mig,
               dci=dci.compute_dci, sap=sap.compute_sap,
               modularity=modularity_explicitness.compute_modularity_explicitness,
               gaussian_tc=unsupervised.compute_unsupervised)


class DSpritesFactors(GroundTruthData):
    factors_num_values = DSPRITES_SIZES

    def sample_observations_from_factors(self, factors, random_state):
        return factors


class NoisyCode:
    """10-dim continuous code of dSprites factors (see the module docstring)."""

    def __init__(self, seed=0):
        angle = 0.1
        self.mix = np.eye(5)
        self.mix[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        self.noise = np.random.RandomState(seed + 1)

    def __call__(self, factors):
        scaled = factors / np.asarray(DSPRITES_SIZES, dtype=np.float64)
        signal = (scaled + 0.02 * self.noise.randn(*scaled.shape)) @ self.mix
        return np.concatenate([signal, self.noise.randn(len(factors), 5)], axis=1)


def _single_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=1)


@click.command()
@click.option('--metrics', 'names', help='Comma-separated metrics', default=','.join(METRICS), show_default=True)
@click.option('--workers', help='DCI worker processes (one factor each)  [default: the library\'s, torch\'s thread '
              'count capped at the number of factors]', type=click.IntRange(min=1))
@click.option('--trees', help='DCI tree implementation', type=click.Choice(['vectorised', 'sklearn']),
              default='vectorised', show_default=True)
def main(names, workers, trees):
    """Time each metric once at the library's defaults (seed 0, one BLAS thread)."""
    if workers is None:  # decided before the BLAS limit below, which also caps torch's thread count
        workers = dci.default_num_workers(len(DSPRITES_SIZES))
    _single_thread()
    rows, total = [], 0.0
    for name in [n.strip() for n in names.split(',') if n.strip()]:
        kwargs = dict(num_workers=workers, trees=trees) if name == 'dci' else {}
        start = time.perf_counter()
        result = METRICS[name](DSpritesFactors(), NoisyCode(), np.random.RandomState(0), **kwargs)
        elapsed = time.perf_counter() - start
        total += elapsed
        rows.append((name, elapsed, result))
        print(f'{name:12s} {elapsed:8.1f} s  {format_time(elapsed):>8s}  '
              + (f'[{workers} worker process(es)] ' if name == 'dci' else '')
              + ', '.join(f'{k}={v:.3f}' for k, v in result.items()), flush=True)
    print(f'{"total":12s} {total:8.1f} s  {format_time(total):>8s}')


if __name__ == '__main__':
    main()
