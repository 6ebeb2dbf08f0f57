"""Separated Attribute Predictability (Kumar et al. 2018), as disentanglement_lib's `sap_score`.

For discrete factors (the library's default, `continuous_factors=False`), entry (i, j) of the score
matrix is the test accuracy of a linear SVM (`LinearSVC(C=0.01, class_weight='balanced')`) that
predicts factor j from code i alone; for continuous factors it is the squared correlation. The
score is the mean over factors of the gap between the best and second-best code. Defaults:
10 000 training / 5 000 test points.
"""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from metrics.ground_truth import MetricError, check_sizes, generate_batch_factor_code


def score_matrix(train_codes, train_factors, test_codes, test_factors, continuous_factors=False):
    """float64 [D, F] predictability of each factor from each single code."""
    num_codes, num_factors = train_codes.shape[1], train_factors.shape[1]
    scores = np.zeros([num_codes, num_factors])
    if continuous_factors:
        for i in range(num_codes):
            for j in range(num_factors):
                cov = np.cov(train_codes[:, i], train_factors[:, j], ddof=1)
                scores[i, j] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0.0
        return scores
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', ConvergenceWarning)
        for i in range(num_codes):
            for j in range(num_factors):
                classifier = LinearSVC(C=0.01, class_weight='balanced')
                classifier.fit(train_codes[:, i:i + 1], train_factors[:, j])
                scores[i, j] = np.mean(classifier.predict(test_codes[:, i:i + 1]) == test_factors[:, j])
    return scores


def avg_gap_top_two(matrix):
    ordered = np.sort(matrix, axis=0)
    return float(np.mean(ordered[-1] - ordered[-2]))


def compute_sap(ground_truth_data, representation_function, random_state, num_train=10000, num_test=5000,
                batch_size=16, continuous_factors=False):
    """Dict with `SAP_score`."""
    check_sizes(num_train=num_train, num_test=num_test)
    train_codes, train_factors = generate_batch_factor_code(ground_truth_data, representation_function, num_train,
                                                            random_state, batch_size)
    test_codes, test_factors = generate_batch_factor_code(ground_truth_data, representation_function, num_test,
                                                          random_state, batch_size)
    if train_codes.shape[1] < 2:
        raise MetricError(f'SAP needs at least 2 code dimensions, got {train_codes.shape[1]}.')
    matrix = score_matrix(train_codes, train_factors, test_codes, test_factors, continuous_factors)
    return dict(SAP_score=avg_gap_top_two(matrix))
