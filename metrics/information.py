"""Discretisation and discrete mutual information shared by MIG, modularity and the unsupervised scores.

Definitions follow disentanglement_lib: each code is cut into `num_bins` equal-width bins spanning
its observed range (`np.histogram` edges, `np.digitize` against all but the last edge, so values
are 1..num_bins), and mutual information is the plug-in estimate in nats that
`sklearn.metrics.mutual_info_score` computes. Here every (code, factor) pair comes out of one
contingency matrix product instead of a double loop of sklearn calls.
"""

import numpy as np


def histogram_discretize(codes, num_bins=20):
    """int64 [N, D]: bin index 1..num_bins of every code value, bins per column over its range."""
    codes = np.asarray(codes, dtype=np.float64)
    discrete = np.empty(codes.shape, dtype=np.int64)
    for column in range(codes.shape[1]):
        edges = np.histogram_bin_edges(codes[:, column], bins=num_bins)
        discrete[:, column] = np.digitize(codes[:, column], edges[:-1])
    return discrete


def _one_hot_columns(labels):
    """float64 [N, sum_k K_k] one-hot blocks for each column of int [N, C], and each block's slice."""
    blocks, slices, offset = [], [], 0
    for column in range(labels.shape[1]):
        _, inverse = np.unique(labels[:, column], return_inverse=True)
        size = int(inverse.max()) + 1 if inverse.size else 0
        block = np.zeros([labels.shape[0], size], dtype=np.float64)
        block[np.arange(labels.shape[0]), inverse.reshape(-1)] = 1.0
        blocks.append(block)
        slices.append(slice(offset, offset + size))
        offset += size
    return np.concatenate(blocks, axis=1), slices


def discrete_mutual_info(codes, factors):
    """float64 [D, F]: mutual information in nats between each discrete code column and factor column."""
    codes = np.asarray(codes)
    factors = np.asarray(factors)
    num = codes.shape[0]
    code_hot, code_slices = _one_hot_columns(codes)
    factor_hot, factor_slices = _one_hot_columns(factors)
    joint_counts = code_hot.T @ factor_hot   # exact integer counts in float64
    code_counts = code_hot.sum(axis=0)
    factor_counts = factor_hot.sum(axis=0)
    info = np.zeros([codes.shape[1], factors.shape[1]])
    for i, rows in enumerate(code_slices):
        for j, cols in enumerate(factor_slices):
            counts = joint_counts[rows, cols]
            a, b = np.nonzero(counts)
            n = counts[a, b]
            # sum p(a,b) log(p(a,b) / (p(a) p(b))) with p = count / num
            terms = n / num * (np.log(n) + np.log(num) - np.log(code_counts[rows][a]) - np.log(factor_counts[cols][b]))
            info[i, j] = max(terms.sum(), 0.0)
    return info


def discrete_entropy(factors):
    """float64 [F]: entropy in nats of each discrete column."""
    factors = np.asarray(factors)
    entropies = np.zeros(factors.shape[1])
    for j in range(factors.shape[1]):
        _, counts = np.unique(factors[:, j], return_counts=True)
        p = counts / counts.sum()
        entropies[j] = -(p * np.log(p)).sum()
    return entropies
