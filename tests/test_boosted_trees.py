"""`metrics.boosted_trees` against scikit-learn's GradientBoostingClassifier(), the algorithm it reimplements for DCI."""

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier

from metrics import boosted_trees, dci
from metrics.boosted_trees import BoostedTreesClassifier

# Where two cuts are exactly equally good (common while the gradients take few values, e.g. cutting
# off one extreme sample of the same class in different features), scikit-learn takes the first
# in a random feature order and we take the lowest feature, so trees can differ after such a tie.
# Hence tolerances on importances and accuracies rather than bit equality.


def test_dci_importance_matrix_and_accuracy_equal_sklearns_on_continuous_codes():
    # Factors of 2, 3 and 4 values; codes: noisy mixtures of them plus a noise dimension (no ties).
    state = np.random.RandomState(4)
    sizes = np.array([2, 3, 4])
    factors = np.stack([state.randint(s, size=700) for s in sizes], axis=1)
    mix = np.eye(3) + 0.3 * state.randn(3, 3)
    codes = np.c_[(factors / sizes + 0.15 * state.randn(700, 3)) @ mix, state.randn(700)]
    train, test = slice(0, 500), slice(500, None)
    ours = dci.importance_gbt(codes[train], factors[train], codes[test], factors[test], trees='vectorised')
    theirs = dci.importance_gbt(codes[train], factors[train], codes[test], factors[test], trees='sklearn')
    np.testing.assert_allclose(ours[0], theirs[0], atol=0.02)
    np.testing.assert_array_equal(np.argsort(ours[0], axis=0), np.argsort(theirs[0], axis=0))
    assert ours[1] == pytest.approx(theirs[1], abs=0.01) and ours[2] == pytest.approx(theirs[2], abs=0.01)
    assert 0.5 < ours[2] < 0.95                             # a problem that is neither trivial nor hopeless
    assert dci.disentanglement(ours[0]) == pytest.approx(dci.disentanglement(theirs[0]), abs=0.01)
    assert dci.completeness(ours[0]) == pytest.approx(dci.completeness(theirs[0]), abs=0.01)


def test_trees_grown_in_chunks_equal_trees_grown_at_once_and_track_sklearn(monkeypatch):
    # 10 classes x 10 features x 2000 samples exceeds one chunk of trees, leaving a smaller last chunk.
    state = np.random.RandomState(5)
    labels = state.randint(10, size=2000)
    codes = np.c_[labels / 10 + 0.2 * state.randn(2000), state.randn(2000, 9)]
    chunked = BoostedTreesClassifier(n_estimators=10).fit(codes, labels)
    monkeypatch.setattr(boosted_trees, '_CHUNK_ELEMENTS', 10 ** 9)
    at_once = BoostedTreesClassifier(n_estimators=10).fit(codes, labels)
    for ours, whole in zip(chunked._trees, at_once._trees):
        np.testing.assert_array_equal(ours, whole)
    np.testing.assert_allclose(chunked.feature_importances_, at_once.feature_importances_, rtol=1e-12)
    theirs = GradientBoostingClassifier(n_estimators=10, random_state=0).fit(codes, labels)
    np.testing.assert_allclose(chunked.feature_importances_, theirs.feature_importances_, atol=0.02)
    assert np.argmax(chunked.feature_importances_) == np.argmax(theirs.feature_importances_) == 0
    assert np.mean(chunked.predict(codes) == labels) == pytest.approx(np.mean(theirs.predict(codes) == labels), abs=0.01)


def test_values_closer_than_1e_7_are_never_split_apart_as_in_sklearn():
    # Pairs (v, next float32 above v) carry opposite labels: no tree may separate them, only the
    # pairs. Splitting between the two members would fit the training labels perfectly.
    state = np.random.RandomState(6)
    base = np.sort(state.uniform(0.5, 0.9, size=150)).astype(np.float32)
    values = np.r_[base, np.nextafter(base, np.float32(1))]
    assert np.all(values[150:] - values[:150] <= 1e-7)
    labels = np.r_[np.zeros(150, dtype=int), np.ones(150, dtype=int)]
    labels[state.rand(300) < 0.1] ^= 1
    codes = np.c_[values, state.randn(300)]
    ours = BoostedTreesClassifier(n_estimators=10).fit(codes, labels)
    theirs = GradientBoostingClassifier(n_estimators=10, random_state=0).fit(codes, labels)
    features, thresholds, _ = ours._trees
    ours_cuts = thresholds[(features == 0) & np.isfinite(thresholds)]
    theirs_cuts = np.concatenate([t.tree_.threshold[t.tree_.feature == 0] for t in theirs.estimators_[:, 0]])
    for cuts in ours_cuts, theirs_cuts:
        assert len(cuts) > 5
        between = (cuts[:, None] >= base[None, :]) & (cuts[:, None] < values[None, 150:])
        assert not between.any()
    assert np.mean(ours.predict(codes) == labels) < 0.9


def test_discrete_codes_with_equally_good_features_pick_the_lowest_feature():
    # Two identical columns cut every node into the same sets: the gains are bit-identical and the
    # first column takes all the importance (scikit-learn would pick one of them at random).
    state = np.random.RandomState(7)
    labels = state.randint(3, size=400)
    column = (labels + state.randint(2, size=400)).astype(float)
    model = BoostedTreesClassifier(n_estimators=10).fit(np.c_[column, column, state.randn(400)], labels)
    assert model.feature_importances_[1] == 0.0 and model.feature_importances_[0] > 0.5
    assert model.feature_importances_.sum() == pytest.approx(1.0)
