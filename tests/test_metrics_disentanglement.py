"""Known values of the disentanglement metrics (docs/METRICS.md) on dSprites factor sizes, without images.

The ground-truth data here only samples factors; its "observations" are the factors themselves, so
a representation is a function of the factors: the scaled indices (perfectly disentangled), or a
random rotation of them (entangled).
"""

import numpy as np
import pytest
import torch
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import mutual_info_score

from metrics import beta_vae, dci, factor_vae, mig, modularity_explicitness, sap, unsupervised
from metrics.boosted_trees import BoostedTreesClassifier
from metrics.ground_truth import GroundTruthData, MetricError, as_ground_truth
from metrics.information import discrete_entropy, discrete_mutual_info, histogram_discretize

DSPRITES_SIZES = (3, 6, 40, 32, 32)


class FactorsOnly(GroundTruthData):
    def __init__(self, sizes=DSPRITES_SIZES):
        self.factors_num_values = tuple(sizes)

    def sample_observations_from_factors(self, factors, random_state):
        return factors


def scaled(factors):
    return factors / np.asarray(DSPRITES_SIZES, dtype=np.float64)


ROTATION = np.linalg.qr(np.random.RandomState(1).randn(5, 5))[0]


def rotated(factors):
    return scaled(factors) @ ROTATION


def rs():
    return np.random.RandomState(0)


# ---------------------------------------------------------------- information


def test_discrete_mutual_info_equals_sklearn():
    state = np.random.RandomState(3)
    codes = state.randint(0, 7, size=(500, 3))
    factors = np.c_[codes[:, 0] // 2, state.randint(0, 4, size=500)]
    info = discrete_mutual_info(codes, factors)
    for i in range(3):
        for j in range(2):
            assert info[i, j] == pytest.approx(mutual_info_score(factors[:, j], codes[:, i]), abs=1e-12)
    assert discrete_entropy(factors)[1] == pytest.approx(mutual_info_score(factors[:, 1], factors[:, 1]))


def test_histogram_discretize_matches_numpy_histogram_bins():
    values = np.random.RandomState(0).randn(1000, 2)
    discrete = histogram_discretize(values, 20)
    expected = np.digitize(values[:, 1], np.histogram(values[:, 1], 20)[1][:-1])
    np.testing.assert_array_equal(discrete[:, 1], expected)
    assert discrete.min() == 1 and discrete.max() == 20


# ---------------------------------------------------------------- MIG


def test_mig_of_scaled_factor_indices_is_about_0_90_on_dsprites_sizes():
    # 20 bins cannot resolve the 40 orientations and 32 positions, so the gap is below 1.
    score = mig.compute_mig(FactorsOnly(), scaled, rs())['discrete_mig']
    assert 0.87 < score < 0.92


def test_mig_of_rotated_factors_is_below_0_1():
    assert mig.compute_mig(FactorsOnly(), rotated, rs())['discrete_mig'] < 0.1


def test_mig_of_code_copying_one_factor_is_one():
    # One factor with 4 values; codes: an exact copy of it and a constant. Gap = (H - 0) / H = 1.
    data = FactorsOnly((4,))
    score = mig.compute_mig(data, lambda f: np.c_[f[:, 0], np.zeros(len(f))], rs(), num_train=2000)['discrete_mig']
    assert score == pytest.approx(1.0, abs=1e-12)


def test_mig_of_code_keeping_one_bit_of_a_two_bit_factor_is_one_half():
    # Copy of f // 2 carries 1 of the factor's 2 bits: gap = H(f // 2) / H(f) = log 2 / log 4.
    data = FactorsOnly((4,))
    score = mig.compute_mig(data, lambda f: np.c_[f[:, 0] // 2, np.zeros(len(f))], rs(), num_train=20000)
    assert score['discrete_mig'] == pytest.approx(0.5, abs=0.005)


def test_mig_of_duplicated_code_is_zero():
    score = mig.compute_mig(FactorsOnly((4, 5)), lambda f: np.c_[f[:, 0], f[:, 0]], rs(), num_train=2000)
    assert score['discrete_mig'] == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------- FactorVAE / BetaVAE


def test_factorvae_of_scaled_factor_indices_is_one():
    result = factor_vae.compute_factor_vae(FactorsOnly(), scaled, rs(), num_train=1000, num_eval=500)
    assert result['eval_accuracy'] == 1.0 and result['num_active_dims'] == 5


def test_factorvae_of_rotation_is_clearly_below_one():
    result = factor_vae.compute_factor_vae(FactorsOnly(), rotated, rs(), num_train=1000, num_eval=500)
    assert result['eval_accuracy'] < 0.8


def test_factorvae_prunes_collapsed_dimensions():
    # A dimension with std 0.01 < 0.05 never votes, even though its variance ratio would be smallest.
    def code(f):
        return np.c_[scaled(f), 0.01 * np.random.RandomState(len(f)).randn(len(f))]
    result = factor_vae.compute_factor_vae(FactorsOnly(), code, rs(), num_train=500, num_eval=300)
    assert result['num_active_dims'] == 5 and result['eval_accuracy'] == 1.0


def test_factorvae_without_active_dims_scores_zero():
    result = factor_vae.compute_factor_vae(FactorsOnly(), lambda f: np.zeros([len(f), 3]), rs(), num_train=10,
                                           num_eval=10, num_variance_estimate=100)
    assert result == dict(train_accuracy=0.0, eval_accuracy=0.0, num_active_dims=0)


def test_betavae_of_scaled_factor_indices_is_one_and_rotation_lower():
    good = beta_vae.compute_beta_vae(FactorsOnly(), scaled, rs(), num_train=1000, num_eval=500)
    bad = beta_vae.compute_beta_vae(FactorsOnly(), rotated, rs(), num_train=1000, num_eval=500)
    assert good['eval_accuracy'] == 1.0
    assert bad['eval_accuracy'] < 0.9


# ---------------------------------------------------------------- DCI


def test_dci_disentanglement_of_identity_is_about_one_and_of_rotation_low():
    good = dci.compute_dci(FactorsOnly(), scaled, rs(), num_train=300, num_test=300)
    assert good['disentanglement'] > 0.95 and good['completeness'] > 0.95 and good['informativeness_test'] == 1.0
    small = FactorsOnly((3, 6, 4, 5, 5))
    rotation = lambda f: (f / np.array([3, 6, 4, 5, 5.0])) @ ROTATION  # noqa: E731
    bad = dci.compute_dci(small, rotation, rs(), num_train=300, num_test=300)
    assert bad['disentanglement'] < 0.3


def test_dci_scores_of_hand_made_importance_matrices():
    diagonal = np.diag(np.full(5, 5.0))
    assert dci.disentanglement(diagonal) == pytest.approx(1.0)
    assert dci.completeness(np.vstack([diagonal, diagonal])) == pytest.approx(1 - np.log(2) / np.log(10))
    assert dci.disentanglement(np.hstack([diagonal, diagonal])) == pytest.approx(1 - np.log(2) / np.log(10))
    assert dci.disentanglement(np.zeros([4, 4])) == pytest.approx(0.0)


def test_vectorised_trees_predict_exactly_like_sklearn():
    state = np.random.RandomState(0)
    labels = state.randint(4, size=300)
    codes = np.c_[labels / 4 + 0.3 * state.randn(300), state.randn(300, 2)]
    ours = BoostedTreesClassifier(n_estimators=20).fit(codes, labels)
    theirs = GradientBoostingClassifier(n_estimators=20, random_state=0).fit(codes, labels)
    reference = theirs.decision_function(codes)
    np.testing.assert_allclose(ours.decision_function(codes) - ours.decision_function(codes).mean(1, keepdims=True),
                               reference - reference.mean(1, keepdims=True), atol=1e-9)
    # Importances agree up to ties between equally good splits, which sklearn breaks at random.
    np.testing.assert_allclose(ours.feature_importances_, theirs.feature_importances_, atol=0.02)
    assert ours.feature_importances_.sum() == pytest.approx(1.0)


def test_vectorised_trees_binary_case_matches_sklearn():
    state = np.random.RandomState(1)
    labels = np.array([3, 7])[state.randint(2, size=200)]
    codes = np.c_[(labels == 7) + 0.5 * state.randn(200), state.randn(200)]
    ours = BoostedTreesClassifier(n_estimators=10).fit(codes, labels)
    theirs = GradientBoostingClassifier(n_estimators=10, random_state=0).fit(codes, labels)
    np.testing.assert_allclose(ours.decision_function(codes)[:, 0], theirs.decision_function(codes), atol=1e-9)
    np.testing.assert_array_equal(ours.predict(codes), theirs.predict(codes))


# ---------------------------------------------------------------- SAP, modularity, unsupervised


def test_sap_of_identity_is_much_higher_than_of_rotation():
    good = sap.compute_sap(FactorsOnly(), scaled, rs(), num_train=2000, num_test=1000)['SAP_score']
    bad = sap.compute_sap(FactorsOnly(), rotated, rs(), num_train=2000, num_test=1000)['SAP_score']
    assert good > 0.12 and bad < 0.05


def test_modularity_of_identity_is_one_and_of_rotation_lower():
    good = modularity_explicitness.compute_modularity_explicitness(FactorsOnly(), scaled, rs(), num_train=1000,
                                                                   num_test=500)
    bad = modularity_explicitness.compute_modularity_explicitness(FactorsOnly(), rotated, rs(), num_train=1000,
                                                                  num_test=500)
    assert good['modularity_score'] > 0.99 and bad['modularity_score'] < 0.85
    assert 0.9 < good['explicitness_score_test'] <= 1.0


def test_gaussian_total_correlation_of_known_covariance():
    # Correlation rho between two unit-variance Gaussians: TC = -0.5 log(1 - rho^2).
    cov = np.array([[1.0, 0.6], [0.6, 1.0]])
    assert unsupervised.gaussian_total_correlation(cov) == pytest.approx(-0.5 * np.log(1 - 0.36))
    assert unsupervised.gaussian_total_correlation(np.diag([2.0, 3.0])) == pytest.approx(0.0)


def test_unsupervised_scores_of_independent_codes_are_near_zero():
    result = unsupervised.compute_unsupervised(FactorsOnly(), scaled, rs(), num_train=5000)
    assert result['gaussian_total_correlation'] < 0.01
    correlated = unsupervised.compute_unsupervised(FactorsOnly(), lambda f: np.c_[scaled(f), scaled(f)[:, 2]], rs(),
                                                   num_train=2000)
    assert correlated['gaussian_total_correlation'] > 1.0


# ---------------------------------------------------------------- adapters and errors


def test_dataset_adapter_renders_dsprites_and_rejects_data_without_factors():
    from training.dataset import open_dataset
    data = as_ground_truth(open_dataset('dsprites'))
    assert data.factors_num_values == DSPRITES_SIZES
    factors, images = data.sample(4, np.random.RandomState(0))
    assert images.shape == (4, 1, 64, 64) and images.dtype == np.uint8
    with pytest.raises(MetricError, match='no ground-truth factors'):
        as_ground_truth(open_dataset('digits'))


def test_representation_returning_wrong_number_of_codes_is_a_clear_error():
    with pytest.raises(MetricError, match='one code per observation'):
        mig.compute_mig(FactorsOnly(), lambda f: np.zeros([3, 2]), rs(), num_train=100)


def test_dci_in_worker_processes_gives_the_single_process_importances_in_factor_order():
    state = np.random.RandomState(0)
    factors = np.c_[state.randint(2, size=200), state.randint(7, size=200), state.randint(4, size=200)]
    codes = np.c_[factors[:, 2] / 4, factors[:, 0] / 2, factors[:, 1] / 7] + 0.05 * state.randn(200, 3)
    one = dci.importance_gbt(codes[:150], factors[:150], codes[150:], factors[150:], num_workers=1)
    two = dci.importance_gbt(codes[:150], factors[:150], codes[150:], factors[150:], num_workers=2)
    np.testing.assert_allclose(two[0], one[0], rtol=1e-12)
    assert two[1:] == one[1:]
    assert list(np.argmax(one[0], axis=0)) == [1, 2, 0]   # factor j is read from the code that copies it


def test_dci_default_workers_follow_torch_threads_and_the_factor_count():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert dci.default_num_workers(5) == 1          # OMP_NUM_THREADS=1: one process
        torch.set_num_threads(2)
        assert dci.default_num_workers(5) == 2
        assert dci.default_num_workers(1) == 1          # never more workers than factors
    finally:
        torch.set_num_threads(threads)
