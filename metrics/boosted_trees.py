"""Gradient-boosted trees with scikit-learn's `GradientBoostingClassifier()` algorithm, grown for all classes at once.

DCI's importance matrix comes from one `GradientBoostingClassifier()` per factor. scikit-learn grows
one regression tree per class per stage, each in its own Python call, so a 40-class factor needs
4 000 separate trees and dSprites' full DCI takes tens of minutes. This module implements the same
algorithm (scikit-learn 1.x defaults: 100 stages, learning rate 0.1, depth-3 regression trees with
the squared-error criterion on the negative gradient, best split over all features, min 1 sample
per leaf, a single Newton step per leaf scaled by (K-1)/K for K > 2 classes, prior-probability
initialisation) but grows the K trees of a stage together, level by level, as numpy array
operations over [samples, classes]. Predictions and the impurity-based feature importances agree
with scikit-learn's up to ties between equally good splits, which scikit-learn breaks by a random
feature order (it is not deterministic there either) and we break by the lowest feature index.

As in scikit-learn, features are compared in float32 and thresholds are float64 midpoints between
neighbouring float32 values.
"""

import numpy as np

_EPSILON = np.finfo(np.float64).eps   # scikit-learn's tree builder: nodes this pure are leaves
_TINY_HESSIAN = 1e-150                # scikit-learn's _safe_divide: leaf value 0 below this


def _softmax(raw):
    shifted = raw - raw.max(axis=1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=1, keepdims=True)


def _expit(raw):
    return 1.0 / (1.0 + np.exp(-raw))


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
        targets = (y_index == 1)[:, None].astype(np.float64) if num_trees == 1 else \
            np.eye(num_classes)[y_index]
        prior = np.clip(np.bincount(y_index, minlength=num_classes) / num, _EPSILON, 1 - _EPSILON)
        if num_trees == 1:
            self._init = np.array([np.log(prior[1] / (1 - prior[1]))])
        else:
            self._init = np.log(prior) - np.log(prior).mean()
        raw = np.tile(self._init, (num, 1))

        orders = np.argsort(x32, axis=0, kind='stable')                     # [N, F]
        sorted_x = np.take_along_axis(x32, orders, axis=0)
        # Splits can only fall between runs of equal values: per feature, where each run starts in
        # sorted order and the run's value. Discrete codes have few runs, which makes them cheap.
        runs = []
        for feature in range(num_features):
            values_sorted = sorted_x[:, feature]
            starts = np.concatenate([[0], np.nonzero(values_sorted[1:] > values_sorted[:-1])[0] + 1])
            runs.append((orders[:, feature], starts, values_sorted[starts]))
        num_internal, num_leaves = 2 ** self.max_depth - 1, 2 ** self.max_depth
        features = np.zeros([self.n_estimators, num_trees, num_internal], dtype=np.int64)
        thresholds = np.full([self.n_estimators, num_trees, num_internal], np.inf)
        values = np.zeros([self.n_estimators, num_trees, num_leaves])
        columns = np.arange(num_trees)
        leaf_scale = 1.0 if num_trees == 1 else (num_classes - 1) / num_classes

        for stage in range(self.n_estimators):
            prob = _expit(raw) if num_trees == 1 else _softmax(raw)
            grad = targets - prob                                           # negative gradient
            node = np.zeros([num, num_trees], dtype=np.int64)               # index within the current level
            for depth in range(self.max_depth):
                go_right = np.zeros([num, num_trees], dtype=bool)
                for local in range(2 ** depth):
                    heap = 2 ** depth - 1 + local
                    member = node == local
                    split = self._best_split(x32, runs, member, grad)
                    if split is None:
                        continue
                    feature, threshold, gain, has_split = split
                    features[stage, has_split, heap] = feature[has_split]
                    thresholds[stage, has_split, heap] = threshold[has_split]
                    np.add.at(self.feature_importances_, feature[has_split], gain[has_split])
                    chosen = x32[:, feature].astype(np.float64)             # [N, T]
                    go_right |= member & has_split[None, :] & (chosen > threshold[None, :])
                node = 2 * node + go_right
            for leaf in range(num_leaves):
                member = node == leaf
                numerator = np.where(member, grad, 0.0).sum(axis=0)
                denominator = np.where(member, prob * (1.0 - prob), 0.0).sum(axis=0)
                count = np.maximum(member.sum(axis=0), 1)
                usable = np.abs(denominator / count) >= _TINY_HESSIAN
                values[stage, :, leaf] = np.where(usable, leaf_scale * numerator / np.where(usable, denominator, 1.0), 0.0)
            raw += self.learning_rate * values[stage][columns[None, :], node]

        total = self.feature_importances_.sum()
        if total > 0:
            self.feature_importances_ = self.feature_importances_ / total
        self._trees = (features, thresholds, values)
        return self

    @staticmethod
    def _best_split(x32, runs, member, grad):
        """Best (feature, threshold, SSE decrease, splittable) per class for one node, or None."""
        count = member.sum(axis=0).astype(np.float64)                        # [T]
        masked = np.where(member, grad, 0.0)
        total = masked.sum(axis=0)
        with np.errstate(divide='ignore', invalid='ignore'):
            impurity = (masked * masked).sum(axis=0) / count - (total / count) ** 2
        splittable = (count >= 2) & (impurity > _EPSILON)
        if not splittable.any():
            return None
        num_trees = member.shape[1]
        best_proxy = np.full(num_trees, -np.inf)
        best_feature = np.zeros(num_trees, dtype=np.int64)
        best_cut = np.zeros(num_trees, dtype=np.float32)
        columns = np.arange(num_trees)
        for feature, (order, starts, run_values) in enumerate(runs):
            if len(starts) < 2:
                continue
            # Left side of a split after run r: cumulative totals over runs 0..r.
            left_count = np.cumsum(np.add.reduceat(member[order].astype(np.int32), starts, axis=0), axis=0)[:-1]
            left_sum = np.cumsum(np.add.reduceat(masked[order], starts, axis=0), axis=0)[:-1]
            right_count = count - left_count
            with np.errstate(divide='ignore', invalid='ignore'):
                # scikit-learn's proxy for the squared-error decrease: sum_l^2 / n_l + sum_r^2 / n_r
                proxy = left_sum ** 2 / left_count + (total - left_sum) ** 2 / right_count
            proxy[(left_count == 0) | (right_count == 0)] = -np.inf
            position = np.argmax(proxy, axis=0)
            value = proxy[position, columns]
            better = value > best_proxy
            best_proxy = np.where(better, value, best_proxy)
            best_feature = np.where(better, feature, best_feature)
            best_cut = np.where(better, run_values[position], best_cut)
        has_split = splittable & np.isfinite(best_proxy)
        if not has_split.any():
            return None
        chosen = x32[:, best_feature]                                       # [N, T] float32
        left = member & (chosen <= best_cut[None, :])
        left_max = np.where(left, chosen, -np.inf).max(axis=0).astype(np.float64)
        right_min = np.where(member & ~left, chosen, np.inf).min(axis=0).astype(np.float64)
        with np.errstate(invalid='ignore'):
            threshold = left_max / 2.0 + right_min / 2.0
            threshold = np.where((threshold == right_min) | np.isinf(threshold), left_max, threshold)
            gain = best_proxy - total ** 2 / count
        return best_feature, threshold, np.where(has_split, gain, 0.0), has_split

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
