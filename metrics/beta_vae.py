"""BetaVAE score (Higgins et al. 2017), as disentanglement_lib's `beta_vae_sklearn`.

One training point: pick a factor k uniformly, draw two batches of `batch_size` factor vectors that
agree on factor k, and take the mean absolute difference of their codes; the label is k. A
logistic regression (scikit-learn defaults) is trained on `num_train` points and the score is its
accuracy on `num_eval` fresh points. Defaults are the library's: batch 64, 10 000 / 5 000 points.
"""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from metrics.ground_truth import check_sizes, represent_factors

POINTS_PER_CHUNK = 32   # 2 * 64 * 32 = 4096 observations per representation call


def _training_points(ground_truth_data, representation_function, batch_size, num_points, random_state):
    """(features float64 [num_points, D], labels int64 [num_points])."""
    features, labels = [], np.zeros(num_points, dtype=np.int64)
    for start in range(0, num_points, POINTS_PER_CHUNK):
        count = min(POINTS_PER_CHUNK, num_points - start)
        pairs = []
        for i in range(start, start + count):
            # Same draw order as the library: factor index, first batch, second batch.
            labels[i] = random_state.randint(ground_truth_data.num_factors)
            first = ground_truth_data.sample_factors(batch_size, random_state)
            second = ground_truth_data.sample_factors(batch_size, random_state)
            second[:, labels[i]] = first[:, labels[i]]
            pairs.append(np.concatenate([first, second], axis=0))
        codes = represent_factors(ground_truth_data, representation_function, np.concatenate(pairs), random_state)
        codes = codes.reshape(count, 2, batch_size, -1)
        features.append(np.abs(codes[:, 0] - codes[:, 1]).mean(axis=1))
    return np.concatenate(features, axis=0), labels


def compute_beta_vae(ground_truth_data, representation_function, random_state,
                     batch_size=64, num_train=10000, num_eval=5000):
    """Dict with `train_accuracy` and `eval_accuracy` (the score)."""
    check_sizes(num_train=num_train, num_eval=num_eval, batch_size=batch_size)
    train_x, train_y = _training_points(ground_truth_data, representation_function, batch_size, num_train, random_state)
    model = LogisticRegression(random_state=random_state)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', ConvergenceWarning)   # the library keeps sklearn's max_iter=100 too
        model.fit(train_x, train_y)
    train_accuracy = float(np.mean(model.predict(train_x) == train_y))
    eval_x, eval_y = _training_points(ground_truth_data, representation_function, batch_size, num_eval, random_state)
    eval_accuracy = float(np.mean(model.predict(eval_x) == eval_y))
    return dict(train_accuracy=train_accuracy, eval_accuracy=eval_accuracy)
