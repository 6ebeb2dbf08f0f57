"""Mutual Information Gap (Chen et al. 2018), as disentanglement_lib's `mig`.

Codes of `num_train` observations are discretised into `num_bins` equal-width histogram bins per
dimension; for each factor, the gap between the largest and second-largest mutual information with
any code, divided by the factor's entropy, is averaged over factors. Defaults are the library's:
10 000 points, 20 bins.
"""

import numpy as np

from metrics.ground_truth import MetricError, check_sizes, generate_batch_factor_code
from metrics.information import discrete_entropy, discrete_mutual_info, histogram_discretize


def mig_from_codes(codes, factors, num_bins=20, discretize=True):
    """MIG of codes float [N, D] against factors int [N, F]; `discretize=False` for already-discrete codes."""
    codes = histogram_discretize(codes, num_bins) if discretize else np.asarray(codes)
    if codes.shape[1] < 2:
        raise MetricError(f'MIG needs at least 2 code dimensions, got {codes.shape[1]}.')
    info = discrete_mutual_info(codes, factors)           # [D, F]
    entropy = discrete_entropy(factors)
    top_two = -np.sort(-info, axis=0)[:2]
    # A factor that never varies has zero entropy and no information to share; count it as gap 0.
    gaps = np.divide(top_two[0] - top_two[1], entropy, out=np.zeros_like(entropy), where=entropy > 0)
    return float(np.mean(gaps)), info, entropy


def compute_mig(ground_truth_data, representation_function, random_state, num_train=10000, batch_size=16,
                num_bins=20):
    """Dict with `discrete_mig`."""
    check_sizes(num_train=num_train)
    codes, factors = generate_batch_factor_code(ground_truth_data, representation_function, num_train,
                                                random_state, batch_size)
    score, _, _ = mig_from_codes(codes, factors, num_bins)
    return dict(discrete_mig=score)
