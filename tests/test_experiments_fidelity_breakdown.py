"""The parts of experiments/fidelity_breakdown.py add up to the fidelity metrics they split."""

import importlib.util
import os
import sys

import numpy as np
import pytest

_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'experiments')
sys.path.insert(0, _DIR)
_spec = importlib.util.spec_from_file_location('fidelity_breakdown', os.path.join(_DIR, 'fidelity_breakdown.py'))
exp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(exp)

from metrics import fidelity  # noqa: E402


def _sets(seed=0, shift=0.5, stretch=2.0):
    rng = np.random.RandomState(seed)
    real = rng.randn(400, 6)
    gen = rng.randn(300, 6) * stretch + shift
    return real, gen


def test_kernel_parts_sum_to_kid_with_the_same_subsets():
    real, gen = _sets()
    kgg, krr, kgr = exp.kernel_parts(real, gen, num_subsets=5, max_subset_size=100, seed=3)
    kid = fidelity.kernel_distance(real, gen, 5, 100, np.random.RandomState(3))
    assert kgg + krr - 2 * kgr == pytest.approx(kid, rel=1e-10)
    assert kgg > krr   # the stretched set has the larger norms, so the larger self-similarity


def test_frechet_parts_split_mean_and_covariance():
    real, gen = _sets(shift=0.0, stretch=1.0)
    gen = gen + np.array([3.0, 0, 0, 0, 0, 0])
    mean_part, cov_part = exp.frechet_parts(real, gen)
    mu_r, mu_g = real.mean(axis=0), gen.mean(axis=0)
    assert mean_part == pytest.approx(np.square(mu_g - mu_r).sum())
    assert mean_part > 8 and cov_part < 1   # a shift of 3 in one coordinate, equal spreads
    assert mean_part + cov_part == pytest.approx(fidelity.frechet_distance(*fidelity.mean_cov(gen),
                                                                           *fidelity.mean_cov(real)))


def test_directions_only_removes_a_pure_norm_difference():
    real, _ = _sets()
    gen = real[:300] * 3.0   # the same directions, three times the norm
    row = exp.breakdown(real, gen, seed=0)
    assert row['sq_norm_over_d_gen'] == pytest.approx(9 * np.mean(np.sum(real[:300] ** 2, axis=1)) / 6)
    assert row['kid'] > 10 * abs(row['kid_directions_only'])
    norms = np.linalg.norm(exp.to_real_norm(gen, real), axis=1)
    assert np.allclose(norms, np.linalg.norm(real, axis=1).mean())
