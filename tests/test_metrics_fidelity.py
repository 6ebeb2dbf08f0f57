"""Fidelity: FD/KID/precision-recall known values, TorchScript detectors by URL, cached real statistics."""

import os

import numpy as np
import pytest
import torch

from metrics import detectors, feature_cache, metric_main
from metrics.fidelity import frechet_distance, kernel_distance, mean_cov, precision_recall
from metrics.ground_truth import MetricError
from tests.test_metrics_generator_side import PerfectGenerator
from training.dataset import open_dataset
from training.procedural import get_builtin


def random_spd(dim, seed):
    a = np.random.RandomState(seed).randn(dim, dim)
    return a @ a.T + 0.1 * np.eye(dim)


def test_frechet_distance_of_identical_gaussians_is_zero_and_of_shifted_ones_the_squared_shift():
    sigma = random_spd(6, 0)
    mu = np.random.RandomState(1).randn(6)
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 1.0])
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(np.sum(shift ** 2), rel=1e-8)
    # Diagonal covariances: the trace term is sum (sqrt(a) - sqrt(b))^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    assert frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b)) == pytest.approx(2.0, rel=1e-8)


def test_frechet_distance_matches_the_matrix_square_root_and_survives_singular_covariances():
    import scipy.linalg
    a, b = random_spd(5, 2), random_spd(5, 3)
    expected = np.trace(a + b - 2 * np.real(scipy.linalg.sqrtm(a @ b)))
    assert frechet_distance(np.zeros(5), a, np.zeros(5), b) == pytest.approx(expected, rel=1e-9)
    # A feature that is always zero (a dead ReLU) makes both covariances singular.
    assert frechet_distance(np.zeros(2), np.diag([1.0, 0.0]), np.zeros(2), np.diag([4.0, 0.0])) == \
        pytest.approx(1.0, abs=1e-12)


def test_frechet_distance_from_samples_approaches_the_closed_form():
    rnd = np.random.RandomState(0)
    real = rnd.randn(20000, 4)
    gen = rnd.randn(20000, 4) + np.array([2.0, 0.0, 0.0, 1.0])
    assert frechet_distance(*mean_cov(real), *mean_cov(gen)) == pytest.approx(5.0, abs=0.15)
    with pytest.raises(MetricError, match='at least 2'):
        mean_cov(real[:1])


def test_kernel_distance_is_near_zero_for_the_same_set_and_large_for_a_shifted_one():
    rnd = np.random.RandomState(0)
    real = rnd.randn(1000, 8)
    same = kernel_distance(real, real, num_subsets=20, max_subset_size=500)
    shifted = kernel_distance(real, real + 1.0, num_subsets=20, max_subset_size=500)
    assert abs(same) < 0.01 * shifted and shifted > 1.0
    # The unbiased estimator is not biased upwards: independent draws of one distribution average ~0.
    other = rnd.randn(1000, 8)
    assert abs(kernel_distance(real, other, num_subsets=20, max_subset_size=500)) < 0.01 * shifted


def test_precision_recall_of_a_set_against_itself_is_one_and_outliers_count_exactly():
    rnd = np.random.RandomState(0)
    real = rnd.randn(300, 5)
    assert precision_recall(real, real, nhood_size=3) == (1.0, 1.0)
    far = rnd.randn(100, 5) + 100.0
    precision, recall = precision_recall(real, np.concatenate([real[:100], far]), nhood_size=3, batch_size=64)
    assert precision == pytest.approx(0.5)         # the copies are inside the real manifold, the far points not
    assert 100 / 300 <= recall < 1.0               # at least the copied real points are covered
    assert precision_recall(real, far, nhood_size=3) == (0.0, 0.0)


class MeanPoolFeatures(torch.nn.Module):
    """A TorchScript stand-in for the Inception detector: uint8 RGB -> 4x4 average-pooled features."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(x.to(torch.float32) / 255.0, 4).flatten(1)
        return pooled if return_features else pooled.sum(dim=1, keepdim=True)


@pytest.fixture
def detector_file(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setattr(detectors, '_detector_cache', {})
    path = tmp_path / 'meanpool.pt'
    torch.jit.script(MeanPoolFeatures()).save(str(path))
    return path


def test_torchscript_detector_loads_from_a_path_and_a_file_url(detector_file):
    by_path = detectors.get_torchscript_detector(str(detector_file), verbose=False)
    by_url = detectors.get_torchscript_detector(detector_file.as_uri(), verbose=False)
    assert detectors.get_torchscript_detector(str(detector_file), verbose=False) is by_path
    gray = torch.linspace(-1, 1, 2 * 64).reshape(2, 1, 8, 8)
    features = by_url(gray)
    assert features.shape == (2, 48) and features.dtype == torch.float32
    assert torch.equal(features, by_path(gray))
    assert torch.allclose(features, by_path((gray * 127.5 + 128).clamp(0, 255).to(torch.uint8)))
    assert by_path.id != by_url.id and by_path.name == 'meanpool'


def test_unreachable_detector_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(detectors, '_detector_cache', {})
    with pytest.raises(MetricError, match='cannot be loaded.*detector_url'):
        detectors.get_torchscript_detector(str(tmp_path / 'missing.pt'), verbose=False)
    not_torchscript = tmp_path / 'junk.pt'
    not_torchscript.write_bytes(b'not a model')
    with pytest.raises(MetricError, match='cannot be loaded'):
        detectors.get_torchscript_detector(str(not_torchscript), verbose=False)


def test_real_statistics_are_cached_and_reused(detector_file):
    detector = detectors.get_torchscript_detector(str(detector_file), verbose=False)
    dataset = open_dataset('dsprites')
    stats = feature_cache.real_features(dataset, detector, 200, capture='mean_cov', progress=False)
    files = os.listdir(os.path.dirname(feature_cache.cache_path(dataset, detector, 200, 'mean_cov', 0)))
    assert len(files) == 1 and files[0].startswith('dsprites-meanpool-')
    features = feature_cache.real_features(dataset, detector, 200, capture='features', progress=False)['features']
    assert features.shape == (200, 48)
    mu, sigma = mean_cov(features)       # the streamed moments equal those of the stored features
    assert np.allclose(stats['mu'], mu, atol=1e-6) and np.allclose(stats['sigma'], sigma, atol=1e-6)

    class Refuse:
        id, name = detector.id, detector.name

        def __call__(self, images):
            raise AssertionError('the cached statistics should have been used')

    again = feature_cache.real_features(dataset, Refuse(), 200, capture='mean_cov', progress=False)
    assert np.array_equal(again['mu'], stats['mu'])
    with pytest.raises(AssertionError, match='cached statistics'):
        feature_cache.real_features(dataset, Refuse(), 201, capture='mean_cov', progress=False)


def test_fid_by_url_separates_a_perfect_generator_from_a_broken_one(detector_file):
    class Blank(PerfectGenerator):
        def _sample(self, num, generator):
            codes, images = super()._sample(num, generator)
            return codes, torch.full_like(images, -1.0)

    source = get_builtin('dsprites')
    options = dict(data='dsprites', progress=False, detector_url=str(detector_file), num_real=2000, num_gen=1000)
    perfect = metric_main.calc_metric('fid50k_full', snapshot_data=PerfectGenerator(source), **options)
    blank = metric_main.calc_metric('fid50k_full', snapshot_data=Blank(source), **options)
    assert perfect.results.fid50k_full < 0.05 * blank.results.fid50k_full
    pr = metric_main.calc_metric('pr50k3_full', snapshot_data=PerfectGenerator(source), **dict(options, num_real=500,
                                                                                                   num_gen=500))
    assert pr.results.pr50k3_full_precision > 0.8 and pr.results.pr50k3_full_recall > 0.8
    kid = metric_main.calc_metric('kid50k_full', snapshot_data=Blank(source), **dict(options, num_subsets=5))
    assert kid.results.kid50k_full > 0


def test_oracle_fidelity_metrics_for_gan_and_vae_snapshots(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path))
    from networks.stylegan2 import Generator
    from networks.vae import Decoder, Encoder
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=64, img_channels=1, mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=64, channel_max=4))
    vae = dict(E=Encoder(img_resolution=64, img_channels=1, code_dim=4), Dec=Decoder(img_resolution=64, img_channels=1,
                                                                                     code_dim=4))
    options = dict(data='dsprites', progress=False, num_real=100, num_gen=50, bank_size=32,
                   oracle_kwargs=dict(num_train=200, num_heldout=50, num_steps=3, batch_size=8))
    fd_gan = metric_main.calc_metric('fd_oracle', snapshot_data=dict(G_ema=G), **options).results.fd_oracle
    fd_vae = metric_main.calc_metric('fd_oracle', snapshot_data=vae, **options).results.fd_oracle
    assert fd_gan >= 0 and fd_vae >= 0 and fd_gan != fd_vae
    pr = metric_main.calc_metric('pr_oracle', snapshot_data=vae, **options).results
    assert set(pr) == {'pr_oracle_precision', 'pr_oracle_recall'}
    with pytest.raises(MetricError, match='no ground-truth factors'):
        metric_main.calc_metric('fd_oracle', snapshot_data=dict(G_ema=G), **dict(options, data='digits'))
