"""A metric's generated samples split across the processes of a multi-process run.

    shard = Shard(rank=1, num_gpus=2, device='cpu')
    for codes, images in shard.iterate(model, num=10000, seed=0, batch_size=256): ...
    features = shard.gather(local_features)      # every rank's rows, in rank order

Used by the generator-side metrics (`mig_gen`, `dci_gen`) and the fidelity metrics when they run
during `train.py --gpus=N` (or torchrun) training. Rank r renders its share of the `num` samples
(`num // N`, the first `num % N` ranks one more) from seed `seed + r * RANK_SEED_STRIDE`; the ranks
then exchange the per-sample arrays (detector features, codes, oracle factors), so every rank
holds all `num` rows and computes the same score. The score is a deterministic function of the seed
and N, but N processes draw a different sample of the generator than one process does (rank 0
keeps the single-process seed, for a smaller share), so compare scores measured with the same N.
With N = 1 nothing changes.

The real-data side (dataset features, the factor oracle) is not split: each rank reads it from the
on-disk cache (or builds the same cache entry; writes are atomic).
"""

import numpy as np
import torch

from metrics.ground_truth import MetricError

RANK_SEED_STRIDE = 1_000_003


class Shard:
    """Which part of a metric's samples this process renders, and how the parts are put back together."""

    def __init__(self, rank=0, num_gpus=1, device='cpu'):
        self.rank, self.num_gpus = int(rank), int(num_gpus)
        if self.num_gpus < 1 or not 0 <= self.rank < self.num_gpus:
            raise ValueError(f'rank {rank} of {num_gpus} processes does not exist.')
        self.device = torch.device(device)

    def share(self, num):
        """How many of `num` samples this rank renders."""
        num = int(num)
        if num < self.num_gpus:
            raise MetricError(f'{num} samples cannot be split across {self.num_gpus} processes; '
                              f'use at least {self.num_gpus}.')
        return num // self.num_gpus + (1 if self.rank < num % self.num_gpus else 0)

    def seed(self, seed):
        return int(seed) + RANK_SEED_STRIDE * self.rank

    def iterate(self, model, num, seed, batch_size):
        """`model.iterate` over this rank's share, from this rank's seed."""
        return model.iterate(self.share(num), seed=self.seed(seed), batch_size=batch_size)

    def gather(self, array):
        """The rows of every rank's `array` (same trailing shape and dtype everywhere), concatenated in rank order."""
        array = np.ascontiguousarray(array)
        if self.num_gpus == 1:
            return array
        local = torch.from_numpy(array).to(self.device)
        sizes = [torch.zeros([1], dtype=torch.int64, device=self.device) for _ in range(self.num_gpus)]
        torch.distributed.all_gather(sizes, torch.tensor([len(array)], dtype=torch.int64, device=self.device))
        sizes = [int(size.item()) for size in sizes]
        padded = torch.zeros((max(sizes),) + tuple(local.shape[1:]), dtype=local.dtype, device=self.device)
        padded[:len(array)] = local
        parts = [torch.empty_like(padded) for _ in range(self.num_gpus)]
        torch.distributed.all_gather(parts, padded)
        return np.concatenate([part[:size].cpu().numpy() for part, size in zip(parts, sizes)])


SINGLE_PROCESS = Shard()
