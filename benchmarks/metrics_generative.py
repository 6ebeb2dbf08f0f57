"""Speed of the factor oracle, the generator-side metrics and the oracle fidelity metrics.

Examples:

    # train the dSprites oracle at its defaults (cached afterwards), then time every metric at its defaults
    python benchmarks/metrics_generative.py

    # only the fidelity metrics, on 3D Shapes
    python benchmarks/metrics_generative.py --data=shapes3d --metrics=fd_oracle,kid_oracle,pr_oracle

The "generator" is the dataset itself: codes are random factor indices divided by the factor
sizes and the images are rendered from them, so the times are the metrics' own cost (oracle
inference, MIG/DCI, distances) plus rendering; add a real generator's rendering time for a model.
The scores are the reference a perfect model would reach at these sample counts. The oracle's
training time is measured only when it is not in the cache yet (`--fresh` trains it again, into a
temporary cache). `dci_gen` is left out by default: its cost is DCI's boosted trees (see
docs/PERFORMANCE.md, Metrics) plus the labelling that mig_gen shows.
"""

import os
import sys
import tempfile
import time

import click
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dnnlib
from dnnlib.progress import format_time
from metrics import metric_main
from metrics.generative import GenerativeModel
from metrics.oracle import load_oracle
from training.dataset import open_dataset

METRICS = ('mig_gen', 'fd_oracle', 'kid_oracle', 'pr_oracle')   # dci_gen: add it by name (DCI's trees, minutes)


class DatasetModel(GenerativeModel):
    """Renders the dataset from factor-valued codes (code_j = factor_j / size_j)."""

    kind = 'dataset'
    code_source = 'factors'

    def __init__(self, dataset):
        super().__init__('cpu')
        self.dataset = dataset
        self.sizes = tuple(dataset.factor_sizes)
        self.code_dim, self.img_resolution, self.img_channels = len(self.sizes), dataset.resolution, dataset.num_channels

    def _sample(self, num, generator):
        factors = torch.stack([torch.randint(size, [num], generator=generator) for size in self.sizes], dim=1)
        images = self.dataset.sample_from_factors(factors.numpy())
        codes = factors.double() / torch.tensor(self.sizes, dtype=torch.float64)
        return codes.float(), torch.from_numpy(images).float() / 127.5 - 1


@click.command()
@click.option('--data', help='Built-in dataset with factors', default='dsprites', show_default=True)
@click.option('--metrics', 'names', help='Comma-separated metrics', default=','.join(METRICS), show_default=True)
@click.option('--fresh', help='Train the oracle again in a temporary cache', is_flag=True)
def main(data, names, fresh):
    """Time the oracle and each generator-side / oracle fidelity metric once at its defaults."""
    torch.set_num_threads(1)
    if fresh:
        dnnlib.util.set_cache_dir(tempfile.mkdtemp(prefix='oracle-bench-'))
    dataset = open_dataset(data)
    start = time.perf_counter()
    oracle = load_oracle(dataset)
    print(f'{"oracle":12s} {time.perf_counter() - start:8.1f} s  (load or train; '
          f'trained in {format_time(oracle.train_info["train_time"])} when it was made)', flush=True)
    total = 0.0
    for name in [n.strip() for n in names.split(',') if n.strip()]:
        start = time.perf_counter()
        result = metric_main.calc_metric(name, snapshot_data=DatasetModel(dataset), data=data, progress=False)
        elapsed = time.perf_counter() - start
        total += elapsed
        print(f'{name:12s} {elapsed:8.1f} s  {format_time(elapsed):>8s}  '
              + ', '.join(f'{k}={v:.3f}' for k, v in result.results.items()), flush=True)
    print(f'{"total":12s} {total:8.1f} s  {format_time(total):>8s}')


if __name__ == '__main__':
    np.set_printoptions(precision=3)
    main()
