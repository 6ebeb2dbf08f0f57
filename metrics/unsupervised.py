"""Unsupervised scores of the code distribution, as disentanglement_lib's `unsupervised_metrics`.

From the codes of `num_train` observations (factors unused): the total correlation of a Gaussian
with the codes' covariance (KL to the product of its marginals, 0.5 (sum log diag C - log det C)),
the squared 2-Wasserstein distance between that Gaussian and the product of its marginals (and
normalised by trace C), and the mean pairwise mutual information between 20-bin discretised codes.
"""

import numpy as np
import scipy.linalg

from metrics.ground_truth import MetricError, check_sizes, generate_batch_factor_code
from metrics.information import discrete_mutual_info, histogram_discretize


def gaussian_total_correlation(cov):
    return float(0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1]))


def gaussian_wasserstein_correlation(cov):
    root = scipy.linalg.sqrtm(cov * np.diag(cov)[:, np.newaxis])
    return float(2.0 * np.trace(cov) - 2.0 * np.real(np.trace(root)))


def compute_unsupervised(ground_truth_data, representation_function, random_state, num_train=10000, batch_size=16,
                         num_bins=20):
    """Dict with `gaussian_total_correlation`, `gaussian_wasserstein_correlation`(`_norm`), `mutual_info_score`."""
    check_sizes(num_train=num_train)
    codes, _ = generate_batch_factor_code(ground_truth_data, representation_function, num_train, random_state,
                                          batch_size)
    num_codes = codes.shape[1]
    if num_codes < 2:
        raise MetricError(f'The unsupervised scores need at least 2 code dimensions, got {num_codes}.')
    cov = np.cov(codes, rowvar=False)
    wasserstein = gaussian_wasserstein_correlation(cov)
    discrete = histogram_discretize(codes, num_bins)
    info = discrete_mutual_info(discrete, discrete)
    np.fill_diagonal(info, 0.0)
    return dict(gaussian_total_correlation=gaussian_total_correlation(cov),
                gaussian_wasserstein_correlation=wasserstein,
                gaussian_wasserstein_correlation_norm=wasserstein / float(np.trace(cov)),
                mutual_info_score=float(info.sum() / (num_codes ** 2 - num_codes)))
