"""Ground-truth data as the disentanglement metrics see it, and the sampling they share.

Every disentanglement metric takes `(ground_truth_data, representation_function, random_state,
**defaults)`, as google-research/disentanglement_lib does:

- `ground_truth_data` has `num_factors`, `factors_num_values`, `sample_factors(num, random_state)`
  -> int64 [num, F] and `sample_observations_from_factors(factors, random_state)` -> observations
  [num, ...]. `GroundTruthData` derives `sample` and `sample_observations` from those two.
- `representation_function(observations) -> float [num, D]` (numpy or torch, any float dtype).
- `random_state` is a `np.random.RandomState`; seed 0 is the library's evaluation seed.

`as_ground_truth` wraps our `training.dataset.Dataset` and `training.procedural.ImageSource` objects
(observations are uint8 [N, C, H, W]) and accepts anything that already has the interface, e.g. a
factors-only object whose "observations" are the factors themselves (the known-value tests).
"""

import numpy as np
import torch


class MetricError(Exception):
    """A metric cannot run on what it was given; one sentence naming the problem and the fix."""


class GroundTruthData:
    """Base class: subclasses set `factor_names`, `factors_num_values` and implement the two samplers."""

    factor_names = ()
    factors_num_values = ()

    @property
    def num_factors(self):
        return len(self.factors_num_values)

    def sample_factors(self, num, random_state):
        """int64 [num, F], each factor uniform over its values, drawn factor by factor."""
        columns = [random_state.randint(size, size=num) for size in self.factors_num_values]
        return np.stack(columns, axis=1).astype(np.int64)

    def sample_observations_from_factors(self, factors, random_state):
        raise NotImplementedError

    def sample(self, num, random_state):
        """(factors [num, F], observations [num, ...]) drawn together."""
        factors = self.sample_factors(num, random_state)
        return factors, self.sample_observations_from_factors(factors, random_state)

    def sample_observations(self, num, random_state):
        return self.sample(num, random_state)[1]


class DatasetGroundTruth(GroundTruthData):
    """Adapter for `training.dataset.Dataset` (has_factors) and `training.procedural.ImageSource`."""

    def __init__(self, source):
        if not getattr(source, 'has_factors', False):
            name = getattr(source, 'name', type(source).__name__)
            raise MetricError(f'Dataset {name!r} has no ground-truth factors, which disentanglement metrics need; '
                              f'use --data=dsprites or shapes3d, or a dataset.json with "factors".')
        self.source = source
        self.factor_names = tuple(source.factor_names)
        self.factors_num_values = tuple(int(size) for size in source.factor_sizes)

    def sample_factors(self, num, random_state):
        return np.asarray(self.source.sample_factors(num, random_state), dtype=np.int64)

    def sample_observations_from_factors(self, factors, random_state):
        if hasattr(self.source, 'sample_from_factors'):   # training.dataset.Dataset
            return self.source.sample_from_factors(factors, random_state)
        return self.source.render(factors)                 # ImageSource renders deterministically


def as_ground_truth(data):
    """A ground-truth data object for a Dataset, an ImageSource, or an object with the interface."""
    if hasattr(data, 'sample_observations_from_factors') and hasattr(data, 'factors_num_values'):
        return data
    if hasattr(data, 'has_factors'):
        return DatasetGroundTruth(data)
    raise MetricError(f'{type(data).__name__} is not ground-truth data; pass a dataset with factors '
                      f'(e.g. training.dataset.open_dataset("dsprites")).')


def to_numpy_codes(codes):
    """Representation output (numpy or torch) -> float64 [N, D]."""
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().double().numpy()
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim == 1:
        codes = codes[:, np.newaxis]
    if codes.ndim != 2:
        raise MetricError(f'The representation function must return codes of shape [N, D], got {list(codes.shape)}.')
    return codes


def represent_factors(ground_truth_data, representation_function, factors, random_state, max_batch=2048):
    """Codes float64 [N, D] for the observations of `factors` [N, F], rendered and encoded in chunks.

    Metrics draw the factors first (in the library's order) and render them in large chunks
    afterwards, which is what makes them fast; it changes nothing for procedural data, whose
    observations do not consume `random_state`.
    """
    chunks = []
    for start in range(0, len(factors), max_batch):
        chunk = factors[start:start + max_batch]
        observations = ground_truth_data.sample_observations_from_factors(chunk, random_state)
        codes = to_numpy_codes(representation_function(observations))
        if len(codes) != len(chunk):
            raise MetricError(f'The representation function returned {len(codes)} codes for {len(chunk)} '
                              f'observations; it must return one code per observation.')
        chunks.append(codes)
    return np.concatenate(chunks, axis=0)


def generate_batch_factor_code(ground_truth_data, representation_function, num_points, random_state,
                               batch_size=16):
    """(codes float64 [num_points, D], factors int64 [num_points, F]) of freshly sampled observations.

    Factors are drawn `batch_size` at a time, as disentanglement_lib does, so the factor stream
    matches its; unlike it, results are returned points-first (rows are points).
    """
    factors = [ground_truth_data.sample_factors(min(batch_size, num_points - start), random_state)
               for start in range(0, num_points, batch_size)]
    factors = np.concatenate(factors, axis=0).astype(np.int64)
    codes = represent_factors(ground_truth_data, representation_function, factors, random_state)
    return codes, factors


def check_sizes(**sizes):
    for name, value in sizes.items():
        if int(value) < 2:
            raise MetricError(f'{name}={value} is too small for this metric; use at least 2 (the default is larger).')
