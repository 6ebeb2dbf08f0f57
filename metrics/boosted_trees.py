"""Gradient-boosted trees with scikit-learn's `GradientBoostingClassifier()` algorithm, grown for all classes at once.

DCI's importance matrix comes from one `GradientBoostingClassifier()` per factor. scikit-learn grows
one regression tree per class per stage, each in its own Python call, so a 40-class factor needs
4 000 separate trees and dSprites' full DCI takes several minutes. This module implements the same
algorithm (scikit-learn 1.x defaults: 100 stages, learning rate 0.1, depth-3 regression trees on
the negative gradient with the friedman_mse criterion, exact best split over all features, values
closer than 1e-7 never split apart, min 1 sample per leaf, a single Newton step per leaf scaled by
(K-1)/K for K > 2 classes, prior-probability initialisation) with an exact split search that is
cheap enough in numpy: each feature is sorted once per fit, every node keeps its samples in value
order, and one cumulative sum per level scores every cut of every node of every class's tree.

The trees equal scikit-learn's except after a tie between exactly equally good splits (common
while the gradients take few values: cutting off one extreme sample of a class scores the same in
every feature), which scikit-learn breaks by a random feature order (it is not deterministic there
either) and we break by the lowest feature index. Gradient sums are exact (fixed point), so such
ties are recognised as ties. As in scikit-learn, features are compared in float32 and thresholds
are float64 midpoints between neighbouring float32 values.
"""

import numpy as np

_EPSILON = np.finfo(np.float64).eps   # scikit-learn's tree builder: nodes this pure are leaves
_TINY_HESSIAN = 1e-150                # scikit-learn's _safe_divide: leaf value 0 below this
_CHUNK_ELEMENTS = 2 ** 17            # work arrays per chunk of trees: [trees, features, samples] <= this
_FEATURE_THRESHOLD = 1e-7             # scikit-learn's splitter: closer values are never split apart


def _softmax(raw):
    shifted = raw - raw.max(axis=1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=1, keepdims=True)


def _expit(raw):
    return 1.0 / (1.0 + np.exp(-raw))


def fixed_point(values):
    """(int64 copy of values * scale, scale): a power of two that leaves any sum over all of them below 2^62.

    Sums of these integers are exact, so two features that cut a node into the same two sets get
    bit-identical gains, and such ties go to the lowest feature index rather than to rounding noise.
    """
    scale = 2.0 ** np.floor(np.log2(2.0 ** 62 / (values.shape[-1] * max(np.abs(values).max(), 2.0 ** -60))))
    return np.rint(values * scale).astype(np.int64), scale


class _StageGrower:
    """Grows the T regression trees of one boosting stage together, level by level, with exact splits.

    Each feature is sorted once per fit. For every (tree, feature) pair the grower keeps the sample
    indices sorted by (node, feature value), so each node is a contiguous segment sorted by value.
    Per level, one gather of the gradients into that order and one cumulative sum along it give the
    left-side sum of every candidate split of every node, for all trees and features at once; a
    segmented maximum then picks each node's best split. After the splits each segment is stably
    partitioned into its two children (a stable sort on the child index), which keeps every child
    sorted by value, so nothing is sorted again.
    """

    def __init__(self, x32, num_trees, max_depth):
        num, num_features = x32.shape
        self.num, self.num_features, self.num_trees, self.max_depth = num, num_features, num_trees, max_depth
        x_t = np.ascontiguousarray(x32.T)                                    # [F, N] float32
        self.x_flat = x_t.astype(np.float64).ravel()                        # exact copies of the float32 values
        orders = np.argsort(x_t, axis=1, kind='stable')
        self.index_type = np.int64   # np.take converts narrower index arrays first: slower than int64
        self.root_order = np.broadcast_to(orders.astype(self.index_type), (num_trees, num_features, num))
        self.tree_offset = (np.arange(num_trees, dtype=self.index_type) * num)[:, None, None]
        self.feature_offset = (np.arange(num_features, dtype=self.index_type) * num)[None, :, None]
        self.row_offset = (np.arange(num_trees * num_features) * num).reshape(num_trees, num_features, 1)
        self.root_tied = self._tied(np.take_along_axis(x_t, orders, axis=1).astype(np.float64))
        # Features with values closer than 1e-7 (discrete codes): below the root, a node's cut may be
        # barred by such a pair. Elsewhere only the last position of each node is barred.
        self.close = np.nonzero(self.root_tied[:, :-1].any(axis=1))[0]
        self.positions = np.arange(num)

    @staticmethod
    def _tied(sorted_x):
        """True where no split may follow a position: the next value is within scikit-learn's 1e-7, or none."""
        tied = np.empty(sorted_x.shape, dtype=bool)
        np.less_equal(sorted_x[..., 1:], sorted_x[..., :-1] + _FEATURE_THRESHOLD, out=tied[..., :-1])
        tied[..., -1] = True
        return tied

    def grow(self, grad, fixed_grad, scale, features, thresholds, importances):
        """Grow one stage on the negative gradient [T, N] (and its fixed-point copy: `fixed_point`).

        Fills features/thresholds [T, nodes], adds to importances; returns the leaf of each sample [T, N].
        """
        num_trees, num_features, num = self.num_trees, self.num_features, self.num
        trees, positions = np.arange(num_trees)[:, None], self.positions
        order, node = self.root_order, np.zeros([num_trees, num], dtype=np.int64)
        for depth in range(self.max_depth):
            width = 2 ** depth
            keys = (trees * width + node).ravel()
            count = np.bincount(keys, minlength=num_trees * width).reshape(num_trees, width)
            total = np.bincount(keys, grad.ravel(), num_trees * width).reshape(num_trees, width)
            square = np.bincount(keys, (grad * grad).ravel(), num_trees * width).reshape(num_trees, width)
            starts = np.cumsum(count, axis=1) - count
            segment = np.repeat(np.tile(np.arange(width), num_trees), count.ravel()).reshape(num_trees, num)
            in_node = count[trees, segment].astype(np.float64)
            left = positions - starts[trees, segment] + 1.0                 # samples left of a cut after here
            right = in_node - left

            # Left-side gradient sums of the cut after every position, exact in fixed point.
            fixed = np.take(fixed_grad.ravel(), order + self.tree_offset, mode='wrap')      # [T, F, N]
            np.cumsum(fixed, axis=2, out=fixed)
            ends = np.cumsum(count, axis=1) - 1
            through = np.where(ends >= 0, fixed[trees, 0, np.maximum(ends, 0)], 0)   # same for every feature
            before = np.concatenate([np.zeros([num_trees, 1], dtype=np.int64), through[:, :-1]], axis=1)
            np.subtract(fixed, before[trees, segment][:, None, :], out=fixed)
            mean = (through - before) / np.maximum(count, 1)                # in fixed-point units
            with np.errstate(divide='ignore'):
                weight = np.where(right > 0, in_node / (left * np.maximum(right, 1)), 0.0) / (scale * scale)
            # Squared-error decrease n/(n_l n_r) (s_l - n_l s/n)^2 of every cut.
            gain = fixed.astype(np.float64)
            np.subtract(gain, (left * mean[trees, segment])[:, None, :], out=gain)
            np.multiply(gain, gain, out=gain)
            np.multiply(gain, weight[:, None, :], out=gain)
            if depth == 0:
                np.copyto(gain, -1.0, where=self.root_tied)
            else:
                last = np.ones([num_trees, num], dtype=bool)
                np.not_equal(segment[:, 1:], segment[:, :-1], out=last[:, :-1])
                np.copyto(gain, -1.0, where=last[:, None, :])
                if len(self.close):
                    close_x = np.take(self.x_flat, order[:, self.close] + self.feature_offset[:, self.close], mode='wrap')
                    gain[:, self.close] = np.where(self._tied(close_x), -1.0, gain[:, self.close])

            flat_starts = np.minimum(self.row_offset + starts[:, None, :], gain.size - 1)
            best = np.maximum.reduceat(gain.ravel(), flat_starts.ravel()).reshape(num_trees, num_features, width)
            best_feature = np.argmax(best, axis=1)                          # ties: the lowest feature index
            best_gain = np.take_along_axis(best, best_feature[:, None, :], axis=1)[:, 0, :]
            with np.errstate(divide='ignore', invalid='ignore'):
                impurity = square / count - (total / count) ** 2
            split = (count >= 2) & (impurity > _EPSILON) & (best_gain >= 0)

            # The first position of the best feature reaching the best gain (scikit-learn keeps the first).
            chosen = np.take(gain.ravel(), (trees * num_features + best_feature[trees, segment]) * num + positions)
            candidate = np.where(chosen == best_gain[trees, segment], positions, num)
            cut = np.minimum.reduceat(candidate.ravel(), np.minimum(trees * num + starts, candidate.size - 1).ravel())
            cut = np.minimum(cut.reshape(num_trees, width), num - 2)
            sorted_rows = order[trees, best_feature]                        # [T, W, N]
            below = self.x_flat[best_feature * num + np.take_along_axis(sorted_rows, cut[..., None], 2)[..., 0]]
            above = self.x_flat[best_feature * num + np.take_along_axis(sorted_rows, cut[..., None] + 1, 2)[..., 0]]
            threshold = below / 2.0 + above / 2.0
            threshold = np.where((threshold == above) | np.isinf(threshold), below, threshold)
            threshold = np.where(split, threshold, np.inf)
            heap = slice(width - 1, 2 * width - 1)
            features[:, heap] = np.where(split, best_feature, 0)
            thresholds[:, heap] = threshold
            np.add.at(importances, best_feature[split], best_gain[split])

            go_right = self.x_flat[best_feature[trees, node] * num + positions] > threshold[trees, node]
            node = 2 * node + go_right
            if depth + 1 < self.max_depth:
                child = np.take(node.astype(np.uint8 if 2 * width <= 256 else np.int32), order + self.tree_offset, mode='wrap')
                moves = np.argsort(child, axis=2, kind='stable')            # radix sort: keeps value order
                order = np.take_along_axis(order, moves, axis=2)
        return node


class BoostedTreesClassifier:
    """`fit(x, y)`, `predict(x)`, `feature_importances_` like scikit-learn's GradientBoostingClassifier()."""

    def __init__(self, n_estimators=100, learning_rate=0.1, max_depth=3):
        self.n_estimators = int(n_estimators)
        self.learning_rate = float(learning_rate)
        self.max_depth = int(max_depth)

    # ------------------------------------------------------------------ fitting

    def fit(self, x, y):
        x32 = np.asarray(x, dtype=np.float32)
        num, num_features = x32.shape
        self.classes_, y_index = np.unique(np.asarray(y), return_inverse=True)
        y_index = y_index.reshape(-1)
        num_classes = len(self.classes_)
        self.feature_importances_ = np.zeros(num_features)
        if num_classes < 2:   # nothing to learn; scikit-learn refuses, DCI wants "predict the constant"
            self._trees = None
            return self
        num_trees = 1 if num_classes == 2 else num_classes
        targets = (y_index == 1)[None, :].astype(np.float64) if num_trees == 1 else \
            np.eye(num_classes)[:, y_index]                                 # [T, N]
        prior = np.clip(np.bincount(y_index, minlength=num_classes) / num, _EPSILON, 1 - _EPSILON)
        if num_trees == 1:
            self._init = np.array([np.log(prior[1] / (1 - prior[1]))])
        else:
            self._init = np.log(prior) - np.log(prior).mean()
        raw = np.repeat(self._init[:, None], num, axis=1)                  # [T, N]

        # Trees are grown in chunks whose [trees, features, samples] work arrays stay cache-sized.
        chunk = max(1, min(num_trees, _CHUNK_ELEMENTS // (num * num_features)))
        growers = {size: _StageGrower(x32, size, self.max_depth)
                   for size in {chunk, num_trees % chunk or chunk}}
        num_internal, num_leaves = 2 ** self.max_depth - 1, 2 ** self.max_depth
        features = np.zeros([self.n_estimators, num_trees, num_internal], dtype=np.int64)
        thresholds = np.full([self.n_estimators, num_trees, num_internal], np.inf)
        values = np.zeros([self.n_estimators, num_trees, num_leaves])
        leaf_scale = 1.0 if num_trees == 1 else (num_classes - 1) / num_classes
        tree_rows = np.arange(num_trees)[:, None]

        for stage in range(self.n_estimators):
            prob = _expit(raw) if num_trees == 1 else _softmax(raw.T).T
            grad = targets - prob                                           # negative gradient [T, N]
            fixed, scale = fixed_point(grad)
            leaf = np.empty([num_trees, num], dtype=np.int64)
            for first in range(0, num_trees, chunk):
                part = slice(first, min(first + chunk, num_trees))
                leaf[part] = growers[part.stop - part.start].grow(grad[part], fixed[part], scale, features[stage, part],
                                                                  thresholds[stage, part], self.feature_importances_)
            keys = (tree_rows * num_leaves + leaf).ravel()
            size = num_trees * num_leaves
            numerator = np.bincount(keys, weights=grad.ravel(), minlength=size).reshape(num_trees, num_leaves)
            denominator = np.bincount(keys, weights=(prob * (1.0 - prob)).ravel(),
                                      minlength=size).reshape(num_trees, num_leaves)
            count = np.maximum(np.bincount(keys, minlength=size).reshape(num_trees, num_leaves), 1)
            usable = np.abs(denominator / count) >= _TINY_HESSIAN
            values[stage] = np.where(usable, leaf_scale * numerator / np.where(usable, denominator, 1.0), 0.0)
            raw += self.learning_rate * np.take_along_axis(values[stage], leaf, axis=1)

        total = self.feature_importances_.sum()
        if total > 0:
            self.feature_importances_ = self.feature_importances_ / total
        self._trees = (features, thresholds, values)
        return self

    # ------------------------------------------------------------------ prediction

    def decision_function(self, x):
        x32 = np.asarray(x, dtype=np.float32)
        features, thresholds, values = self._trees
        num_trees = features.shape[1]
        rows, columns = np.arange(len(x32))[:, None], np.arange(num_trees)[None, :]
        raw = np.tile(self._init, (len(x32), 1))
        for stage in range(features.shape[0]):
            node = np.zeros([len(x32), num_trees], dtype=np.int64)
            for depth in range(self.max_depth):
                heap = 2 ** depth - 1 + node
                chosen = x32[rows, features[stage][columns, heap]].astype(np.float64)
                node = 2 * node + (chosen > thresholds[stage][columns, heap])
            raw += self.learning_rate * values[stage][columns, node]
        return raw

    def predict(self, x):
        if self._trees is None:
            return np.full(len(x), self.classes_[0])
        raw = self.decision_function(x)
        if raw.shape[1] == 1:
            return self.classes_[(raw[:, 0] > 0).astype(np.int64)]
        return self.classes_[np.argmax(raw, axis=1)]
