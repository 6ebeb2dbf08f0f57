"""Running statistics (count, mean, std) of named values, reduced across processes; StyleGAN2-ADA's interface.

Anywhere in the code, `training_stats.report('Loss/G/loss', loss)` adds the elements of `loss` to
the counters of that name. Reporting never synchronises with the GPU or other processes, so it is
cheap inside the training step. A Collector (one per consumer, e.g. the tick printer) calls update()
now and then: that sums the counters of all processes and devices, and from then on num(), mean()
and std() describe exactly the values reported between its last two update() calls.

In multi-process training every rank must report (or report0) the same names, because update()
reduces one tensor of all matching names across ranks; names are reduced in sorted order.
"""

import re

import numpy as np
import torch

import dnnlib

from . import misc

# count, sum and sum of squares of the finite values, counts of NaN, +Inf and -Inf. Non-finite
# values are counted apart instead of summed: a NaN in a running sum would stay there for the life
# of the process, and every later Collector (a second run in the same process, a test after a
# divergence test) would read NaN from subtracting totals, even when its own values are finite.
_MOMENTS = 6
_COUNTER_DTYPE = torch.float64  # large counts and sums of squares of losses stay exact enough

_rank = 0                # this process's rank
_sync_device = None      # device for all_reduce; None = single process, no communication
_sync_called = False     # once statistics were synchronised, the process layout is fixed
_counters = {}           # name -> {device: moments since the last sync}, filled by report()
_cumulative = {}         # name -> CPU moments of all processes since the start, filled by _sync()


def init_multiprocessing(rank, sync_device):
    """Declare this process's rank and the device used to reduce statistics (None = single process).

    Call once per process before the first Collector.update(); with NCCL use the rank's CUDA
    device, with gloo use torch.device('cpu').
    """
    global _rank, _sync_device
    if _sync_called:
        raise RuntimeError('training_stats.init_multiprocessing() must be called before the first '
                           'Collector is created or updated.')
    _rank = rank
    _sync_device = sync_device


def _reduction_dtype(device):
    # Apple's MPS backend has no float64.
    return torch.float32 if device.type == 'mps' else _COUNTER_DTYPE


@misc.profiled_function
def report(name, value):
    """Add the elements of `value` (number, sequence, array or tensor of any shape) to statistic `name`.

    Returns `value` unchanged, so it can wrap an expression: `loss = report('Loss/G', loss)`.
    An empty value still registers the name, so Collectors list it on every rank.
    """
    per_device = _counters.setdefault(name, {})
    elems = torch.as_tensor(value)
    if elems.numel() == 0:
        return value
    elems = elems.detach().flatten().to(_reduction_dtype(elems.device))
    finite = torch.isfinite(elems)
    clean = torch.where(finite, elems, torch.zeros_like(elems))
    # The count is filled on the device: new_tensor(numel) would be a blocking host-to-device copy,
    # which on CUDA waits for the stream at every report.
    count = torch.full([], elems.numel(), dtype=elems.dtype, device=elems.device)
    moments = torch.stack([count, clean.sum(), clean.square().sum(),
                           elems.isnan().sum().to(elems.dtype), (elems == np.inf).sum().to(elems.dtype),
                           (elems == -np.inf).sum().to(elems.dtype)])
    # Summed per device without moving to the CPU: a .cpu() here would stall the GPU every step.
    counter = per_device.get(moments.device)
    if counter is None:
        per_device[moments.device] = moments.clone()
    else:
        counter.add_(moments)
    return value


def report0(name, value):
    """Like report(), but only rank 0's values count (for values that are identical on every rank)."""
    report(name, value if _rank == 0 else [])
    return value


def _sync(names):
    """Fold this process's new counters for `names` into the global totals; returns [(name, totals)]."""
    global _sync_called
    if not names:
        return []
    _sync_called = True
    device = _sync_device if _sync_device is not None else torch.device('cpu')
    deltas = torch.zeros([len(names), _MOMENTS], dtype=_COUNTER_DTYPE, device=device)
    for row, name in enumerate(names):
        for counter in _counters[name].values():
            deltas[row] += counter.to(device=device, dtype=_COUNTER_DTYPE)
            counter.zero_()
    if _sync_device is not None:
        torch.distributed.all_reduce(deltas)
    deltas = deltas.cpu()
    for row, name in enumerate(names):
        total = _cumulative.setdefault(name, torch.zeros([_MOMENTS], dtype=_COUNTER_DTYPE))
        total += deltas[row]
    return [(name, _cumulative[name]) for name in names]


class Collector:
    """View of the statistics whose names fully match `regex`, refreshed by update().

    After update(), each statistic describes the values reported since the previous update() (or,
    for the first update(), since this Collector was created). With keep_previous=True a statistic
    that received nothing new keeps its previous values; with keep_previous=False it reads as
    num=0, mean=std=nan.
    """

    def __init__(self, regex='.*', keep_previous=True):
        self._regex = re.compile(regex)
        self._keep_previous = keep_previous
        self._totals_seen = {}  # name -> global totals at our last update()
        self._moments = {}      # name -> moments between our last two update() calls
        self.update()           # values reported before we existed are not ours
        self._moments.clear()

    def names(self):
        """Names of all statistics reported so far (by any code) that match the regex, sorted."""
        return sorted(name for name in _counters if self._regex.fullmatch(name))

    def update(self):
        """Synchronise with all processes; in multi-process runs every rank must call this together."""
        if not self._keep_previous:
            self._moments.clear()
        for name, totals in _sync(self.names()):
            seen = self._totals_seen.get(name)
            delta = totals.clone() if seen is None else totals - seen
            self._totals_seen[name] = totals.clone()
            if delta[0] != 0:
                self._moments[name] = delta

    def _delta(self, name):
        if not self._regex.fullmatch(name):
            raise KeyError(f'Statistic "{name}" does not match this Collector\'s regex "{self._regex.pattern}".')
        moments = self._moments.get(name)
        return moments if moments is not None else torch.zeros([_MOMENTS], dtype=_COUNTER_DTYPE)

    def num(self, name):
        """Number of scalar values reported for `name` in the last update period."""
        return int(self._delta(name)[0])

    def mean(self, name):
        """Mean of those values (nan when there were none; IEEE rules when some were NaN or Inf)."""
        count, total, _, nans, pos_infs, neg_infs = self._delta(name).tolist()
        if count == 0 or nans or (pos_infs and neg_infs):
            return float('nan')
        if pos_infs or neg_infs:
            return float('inf') if pos_infs else float('-inf')
        return total / count

    def std(self, name):
        """Population standard deviation of those values (0 for one value, nan for none or non-finite)."""
        count, total, total_sq, nans, pos_infs, neg_infs = self._delta(name).tolist()
        if count == 0 or nans or pos_infs or neg_infs or not np.isfinite(total):
            return float('nan')
        if count == 1:
            return 0.0
        mean = total / count
        return float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))

    def as_dict(self):
        """EasyDict name -> EasyDict(num, mean, std) for every matching statistic (for stats.jsonl)."""
        return dnnlib.EasyDict({name: dnnlib.EasyDict(num=self.num(name), mean=self.mean(name), std=self.std(name))
                                for name in self.names()})

    def __getitem__(self, name):
        return self.mean(name)
