"""Modularity and explicitness (Ridgeway & Mozer 2018), as disentanglement_lib's `modularity_explicitness`.

Modularity: from the mutual information m [codes, factors] (20-bin histogram discretisation), each
code scores 1 - (sum_j m_ij^2 - max_j m_ij^2) / (max_j m_ij^2 (F - 1)), codes with no information
score 0; the mean over codes is reported. Explicitness: per factor, a logistic regression
(scikit-learn defaults) on the standardised codes; its one-vs-rest ROC-AUC (macro average over the
factor's classes), averaged over factors, on training and on fresh test points. Defaults: 10 000 /
5 000 points.
"""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from metrics.ground_truth import check_sizes, generate_batch_factor_code
from metrics.information import discrete_mutual_info, histogram_discretize


def modularity(mutual_information):
    squared = np.square(mutual_information)
    max_squared = squared.max(axis=1)
    with np.errstate(divide='ignore', invalid='ignore'):
        delta = (squared.sum(axis=1) - max_squared) / (max_squared * (squared.shape[1] - 1.0))
    scores = np.where(max_squared == 0.0, 0.0, 1.0 - delta)
    return float(np.mean(scores))


def _auc(classifier, codes, labels):
    indicator = (labels[:, np.newaxis] == classifier.classes_[np.newaxis, :]).astype(np.int64)
    return roc_auc_score(indicator, classifier.predict_proba(codes))


def explicitness_per_factor(train_codes, train_labels, test_codes, test_labels):
    """(train ROC-AUC, test ROC-AUC) of a logistic regression predicting one factor from all codes."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', ConvergenceWarning)
        classifier = LogisticRegression().fit(train_codes, train_labels)
    return _auc(classifier, train_codes, train_labels), _auc(classifier, test_codes, test_labels)


def compute_modularity_explicitness(ground_truth_data, representation_function, random_state, num_train=10000,
                                    num_test=5000, batch_size=16, num_bins=20):
    """Dict with `modularity_score`, `explicitness_score_train`, `explicitness_score_test`."""
    check_sizes(num_train=num_train, num_test=num_test)
    train_codes, train_factors = generate_batch_factor_code(ground_truth_data, representation_function, num_train,
                                                            random_state, batch_size)
    test_codes, test_factors = generate_batch_factor_code(ground_truth_data, representation_function, num_test,
                                                          random_state, batch_size)
    info = discrete_mutual_info(histogram_discretize(train_codes, num_bins), train_factors)
    mean, std = train_codes.mean(axis=0), train_codes.std(axis=0)
    std = np.where(std > 0, std, 1.0)   # a constant code carries nothing; avoid 0/0
    train_norm, test_norm = (train_codes - mean) / std, (test_codes - mean) / std
    aucs = np.array([explicitness_per_factor(train_norm, train_factors[:, j], test_norm, test_factors[:, j])
                     for j in range(train_factors.shape[1])])
    return dict(modularity_score=modularity(info), explicitness_score_train=float(aucs[:, 0].mean()),
                explicitness_score_test=float(aucs[:, 1].mean()))
