"""FactorVAE score (Kim & Mnih 2018), as disentanglement_lib's `factor_vae_score`.

Global per-dimension variances (ddof=1) come from `num_variance_estimate` observations; dimensions
whose standard deviation is below `prune_threshold` are ignored. One vote: pick a factor k, draw a
batch of `batch_size` factor vectors with factor k fixed to one value, and vote for the active
dimension with the smallest local / global variance. The majority-vote classifier (one dimension ->
its most frequent factor) is built from `num_train` votes; the score is its accuracy on `num_eval`
votes. Defaults are the library's: batch 64, 10 000 / 5 000 votes, 10 000 for the variances,
threshold 0.05.
"""

import numpy as np

from metrics.ground_truth import check_sizes, represent_factors

VOTES_PER_CHUNK = 64   # 64 * 64 = 4096 observations per representation call


def _votes(ground_truth_data, representation_function, batch_size, num_points, random_state,
           global_variances, active_dims):
    """int64 [F, D] counts of (fixed factor, chosen dimension) over `num_points` votes."""
    votes = np.zeros([ground_truth_data.num_factors, global_variances.shape[0]], dtype=np.int64)
    active_index = np.nonzero(active_dims)[0]
    for start in range(0, num_points, VOTES_PER_CHUNK):
        count = min(VOTES_PER_CHUNK, num_points - start)
        fixed, batches = np.zeros(count, dtype=np.int64), []
        for i in range(count):
            fixed[i] = random_state.randint(ground_truth_data.num_factors)
            factors = ground_truth_data.sample_factors(batch_size, random_state)
            factors[:, fixed[i]] = factors[0, fixed[i]]
            batches.append(factors)
        codes = represent_factors(ground_truth_data, representation_function, np.concatenate(batches), random_state)
        local_variances = codes.reshape(count, batch_size, -1).var(axis=1, ddof=1)
        ratio = local_variances[:, active_index] / global_variances[active_index]
        np.add.at(votes, (fixed, active_index[np.argmin(ratio, axis=1)]), 1)
    return votes


def compute_factor_vae(ground_truth_data, representation_function, random_state,
                       batch_size=64, num_train=10000, num_eval=5000, num_variance_estimate=10000,
                       prune_threshold=0.05):
    """Dict with `train_accuracy`, `eval_accuracy` (the score) and `num_active_dims`."""
    check_sizes(batch_size=batch_size, num_variance_estimate=num_variance_estimate)
    factors = ground_truth_data.sample_factors(num_variance_estimate, random_state)
    codes = represent_factors(ground_truth_data, representation_function, factors, random_state)
    global_variances = codes.var(axis=0, ddof=1)
    active_dims = np.sqrt(global_variances) >= prune_threshold
    if not active_dims.any():
        return dict(train_accuracy=0.0, eval_accuracy=0.0, num_active_dims=0)

    train_votes = _votes(ground_truth_data, representation_function, batch_size, num_train, random_state,
                         global_variances, active_dims)
    classifier = np.argmax(train_votes, axis=0)   # dimension -> factor; unused dimensions map to factor 0
    dims = np.arange(train_votes.shape[1])
    train_accuracy = train_votes[classifier, dims].sum() / max(train_votes.sum(), 1)
    eval_votes = _votes(ground_truth_data, representation_function, batch_size, num_eval, random_state,
                        global_variances, active_dims)
    eval_accuracy = eval_votes[classifier, dims].sum() / max(eval_votes.sum(), 1)
    return dict(train_accuracy=float(train_accuracy), eval_accuracy=float(eval_accuracy),
                num_active_dims=int(active_dims.sum()))
