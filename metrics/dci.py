"""Disentanglement, completeness and informativeness (Eastwood & Williams 2018), as disentanglement_lib's `dci`.

Per factor, a gradient-boosted-trees classifier (scikit-learn `GradientBoostingClassifier()` with
its defaults: 100 stages of depth-3 trees, learning rate 0.1) predicts the factor from the codes
of `num_train` observations. Its impurity-based feature importances form column j of the
importance matrix R [codes, factors]. Disentanglement is sum_i rho_i (1 - H_F(R_i.)) with
rho_i = R_i. / sum(R) and entropies in base F (number of factors); completeness is the same per
factor with base D (number of codes); informativeness is the mean classification accuracy
(on `num_test` fresh observations for `informativeness_test`). Defaults: 10 000 / 5 000 points.

The trees dominate the cost (one tree per class per stage: dSprites needs 113 trees per stage).
By default they are grown by `metrics.boosted_trees.BoostedTreesClassifier`, the same algorithm
with a cheaper exact split search (identical trees except where scikit-learn breaks a tie between
equally good splits at random); `trees='sklearn'` uses scikit-learn itself. With `num_workers` > 1 factors are
fitted in parallel worker processes (same result as one process). The default, None, takes as many as torch
has intra-op threads (`torch.get_num_threads()`, i.e. the cores unless OMP_NUM_THREADS or
`torch.set_num_threads` says less), at most one per factor: on 2 idle cores the library-default dSprites
problem takes 60–77 s instead of 111 s (docs/PERFORMANCE.md), and OMP_NUM_THREADS=1 keeps DCI in one process.
"""

import numpy as np
import scipy.stats
import torch
from sklearn.ensemble import GradientBoostingClassifier

from metrics.boosted_trees import BoostedTreesClassifier
from metrics.ground_truth import MetricError, check_sizes, generate_batch_factor_code

TREE_CLASSES = {'vectorised': BoostedTreesClassifier, 'sklearn': GradientBoostingClassifier}


def _fit_one_factor(train_codes, train_labels, test_codes, test_labels, trees):
    model = TREE_CLASSES[trees]()
    model.fit(train_codes, train_labels)
    return (np.abs(model.feature_importances_), np.mean(model.predict(train_codes) == train_labels),
            np.mean(model.predict(test_codes) == test_labels))


def default_num_workers(num_factors):
    """Worker processes when `num_workers` is None: torch's intra-op thread count, at most one per factor."""
    return max(1, min(torch.get_num_threads(), num_factors))


def importance_gbt(train_codes, train_factors, test_codes, test_factors, num_workers=None, trees='vectorised'):
    """(importance [D, F], mean train accuracy, mean test accuracy) from one GBT classifier per factor."""
    if trees not in TREE_CLASSES:
        raise MetricError(f'Unknown trees={trees!r}; use one of {", ".join(TREE_CLASSES)}.')
    jobs = [(train_codes, train_factors[:, j], test_codes, test_factors[:, j], trees)
            for j in range(train_factors.shape[1])]
    if num_workers is None:
        num_workers = default_num_workers(len(jobs))
    if num_workers > 1 and len(jobs) > 1:
        from joblib import Parallel, delayed  # ships with scikit-learn
        # A factor costs one tree per class per stage: hand out the factors with most classes first
        # (longest job first), so that e.g. dSprites' 40-class orientation does not start last.
        order = sorted(range(len(jobs)), key=lambda j: -len(np.unique(train_factors[:, j])))
        fitted = Parallel(n_jobs=num_workers)(delayed(_fit_one_factor)(*jobs[j]) for j in order)
        results = [None] * len(jobs)
        for j, result in zip(order, fitted):
            results[j] = result
    else:
        results = [_fit_one_factor(*job) for job in jobs]
    importance = np.stack([result[0] for result in results], axis=1).astype(np.float64)
    return importance, float(np.mean([r[1] for r in results])), float(np.mean([r[2] for r in results]))


def disentanglement_per_code(importance):
    """1 - entropy (base F) of each code's importance over factors."""
    return 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=importance.shape[1])


def disentanglement(importance):
    per_code = disentanglement_per_code(importance)
    if importance.sum() == 0.0:
        importance = np.ones_like(importance)   # no information: weigh all codes equally
    return float(np.sum(per_code * importance.sum(axis=1) / importance.sum()))


def completeness_per_factor(importance):
    """1 - entropy (base D) of each factor's importance over codes."""
    return 1.0 - scipy.stats.entropy(importance + 1e-11, base=importance.shape[0])


def completeness(importance):
    per_factor = completeness_per_factor(importance)
    if importance.sum() == 0.0:
        importance = np.ones_like(importance)
    return float(np.sum(per_factor * importance.sum(axis=0) / importance.sum()))


def dci_from_codes(train_codes, train_factors, test_codes, test_factors, num_workers=None, trees='vectorised'):
    importance, train_accuracy, test_accuracy = importance_gbt(train_codes, train_factors, test_codes, test_factors,
                                                               num_workers, trees)
    return dict(informativeness_train=train_accuracy, informativeness_test=test_accuracy,
                disentanglement=disentanglement(importance), completeness=completeness(importance))


def compute_dci(ground_truth_data, representation_function, random_state, num_train=10000, num_test=5000,
                batch_size=16, num_workers=None, trees='vectorised'):
    """Dict with `disentanglement`, `completeness`, `informativeness_train`, `informativeness_test`."""
    check_sizes(num_train=num_train, num_test=num_test)
    train_codes, train_factors = generate_batch_factor_code(ground_truth_data, representation_function, num_train,
                                                            random_state, batch_size)
    test_codes, test_factors = generate_batch_factor_code(ground_truth_data, representation_function, num_test,
                                                          random_state, batch_size)
    return dci_from_codes(train_codes, train_factors, test_codes, test_factors, num_workers, trees)
