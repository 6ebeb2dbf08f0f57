"""Generator-side MIG/DCI: perfect generators score high, rotated codes low; GAN and VAE snapshots as models."""

import numpy as np
import pytest
import torch

from metrics import metric_main
from metrics.generative import GANModel, GenerativeModel, VAEModel, generative_model
from metrics.generator_side import compute_dci_gen, compute_mig_gen, generated_codes_and_factors
from metrics.ground_truth import MetricError
from metrics.oracle import load_oracle
from tests.test_metrics_oracle import TINY, BlockSource
from training.procedural import get_builtin

DSPRITES_SIZES = (3, 6, 40, 32, 32)


def random_rotation(dim, seed=0):
    q, r = np.linalg.qr(np.random.RandomState(seed).randn(dim, dim))
    return q * np.sign(np.diag(r))


class PerfectGenerator(GenerativeModel):
    """Renders a factor dataset straight from factor-valued codes (code_j = factor_j / size_j), optionally rotated."""

    kind = 'perfect'
    code_source = 'factors'

    def __init__(self, source, rotation=None, registry=None):
        super().__init__('cpu')
        self.source, self.rotation, self.registry = source, rotation, registry
        self.sizes = tuple(source.factor_sizes)
        self.code_dim, self.img_resolution, self.img_channels = len(self.sizes), source.resolution, source.num_channels

    def _sample(self, num, generator):
        factors = torch.stack([torch.randint(size, [num], generator=generator) for size in self.sizes], dim=1)
        codes = factors.double() / torch.tensor(self.sizes, dtype=torch.float64)
        if self.rotation is not None:
            codes = codes @ torch.from_numpy(self.rotation)
        if hasattr(self.source, 'render'):
            images = self.source.render(factors.numpy())
        else:
            images = self.source.images(np.ravel_multi_index(tuple(factors.numpy().T), self.sizes))
        if self.registry is not None:
            for image, row in zip(images, factors.numpy()):
                self.registry.setdefault(image.tobytes(), row)
        return codes.float(), torch.from_numpy(np.asarray(images)).float() / 127.5 - 1


class ExactOracle:
    """Labels each image with the factors it was first rendered from (symmetric sprites keep one label)."""

    def __init__(self, source, registry):
        self.factor_names, self.factor_sizes = tuple(source.factor_names), tuple(source.factor_sizes)
        self.img_resolution, self.img_channels = source.resolution, source.num_channels
        self.registry = registry

    def predict(self, images):
        pixels = ((images + 1) * 127.5).round().to(torch.uint8).numpy()
        return torch.from_numpy(np.stack([self.registry[image.tobytes()] for image in pixels]))


def test_mig_gen_of_a_perfect_dsprites_generator_is_high_and_of_a_rotated_code_low():
    source = get_builtin('dsprites')
    registry = {}
    exact = ExactOracle(source, registry)
    identity = compute_mig_gen(PerfectGenerator(source, registry=registry), exact, num_train=4000)
    rotated = compute_mig_gen(PerfectGenerator(source, rotation=random_rotation(5), registry=registry), exact,
                              num_train=4000)
    # As for the encoder-side known value (0.896): 20 bins cannot resolve 32 or 40 values, and the
    # symmetric sprites make orientation partly unidentifiable from the image.
    assert identity['mig_gen'] > 0.75
    assert identity['mig_gen_shape'] > 0.95 and identity['mig_gen_pos_x'] > 0.8
    assert rotated['mig_gen'] < 0.15
    assert set(identity) == {'mig_gen'} | {f'mig_gen_{name}' for name in source.factor_names}


def test_sampling_is_seeded_and_labels_come_from_the_oracle():
    source = get_builtin('dsprites')
    registry = {}
    model = PerfectGenerator(source, registry=registry)
    codes_a, factors_a = generated_codes_and_factors(model, ExactOracle(source, registry), 300, seed=5, batch_size=64)
    codes_b, factors_b = generated_codes_and_factors(model, ExactOracle(source, registry), 300, seed=5, batch_size=64)
    codes_c, _ = generated_codes_and_factors(model, ExactOracle(source, registry), 300, seed=6, batch_size=64)
    assert codes_a.shape == (300, 5) and factors_a.shape == (300, 5) and factors_a.dtype == np.int64
    assert np.array_equal(codes_a, codes_b) and np.array_equal(factors_a, factors_b)
    assert not np.array_equal(codes_a, codes_c)
    # Shape, scale and position are recovered exactly from the codes (orientation may alias).
    assert np.array_equal(np.round(codes_a[:, [0, 1, 3, 4]] * np.array([3, 6, 32, 32])), factors_a[:, [0, 1, 3, 4]])


def test_dci_gen_with_a_trained_oracle_separates_identity_from_rotation(tmp_path):
    source = BlockSource()
    oracle = load_oracle(source, cache_dir=str(tmp_path), verbose=False, **TINY)
    identity = compute_dci_gen(PerfectGenerator(source), oracle, num_train=200, num_test=100)
    rotated = compute_dci_gen(PerfectGenerator(source, rotation=random_rotation(3, seed=1)), oracle,
                              num_train=200, num_test=100)
    # Exact codes leave the late boosting stages only ties to split on, which caps the identity near 0.8.
    assert identity['dci_gen_disentanglement'] > 0.7 and identity['dci_gen_completeness'] > 0.7
    assert identity['dci_gen_informativeness_test'] > 0.9
    assert rotated['dci_gen_disentanglement'] < 0.4


class CodeSampler(torch.nn.Module):
    """A disentangled sampler: z = cat(categorical one-hot (3), continuous (2)); code = [index, values]."""

    z_dim = 5

    def sample(self, batch_size, device='cpu', generator=None):
        index = torch.randint(3, [batch_size], generator=generator, device=device)
        continuous = torch.rand([batch_size, 2], generator=generator, device=device) * 2 - 1
        z = torch.cat([torch.nn.functional.one_hot(index, 3).float(), continuous], dim=1)
        return dict_(z=z, code=torch.cat([index[:, None].float(), continuous], dim=1))


def dict_(**kwargs):
    import dnnlib
    return dnnlib.EasyDict(kwargs)


def tiny_gan(z_dim, c_dim=0):
    from networks.stylegan2 import Generator
    torch.manual_seed(0)
    return Generator(z_dim=z_dim, c_dim=c_dim, w_dim=8, img_resolution=16, img_channels=1,
                     mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=64, channel_max=8))


def test_gan_model_uses_the_samplers_code_or_the_first_z_dims():
    with_code = GANModel(dict(G_ema=tiny_gan(5), latent=CodeSampler()))
    assert (with_code.code_source, with_code.code_dim) == ('code', 3)
    codes, images = next(with_code.iterate(6, seed=0, batch_size=6))
    assert codes.shape == (6, 3) and set(codes[:, 0].tolist()) <= {0.0, 1.0, 2.0}
    assert images.shape == (6, 1, 16, 16) and images.min() >= -1 and images.max() <= 1
    plain = generative_model(dict(G_ema=tiny_gan(12, c_dim=2)), num_z_codes=4)
    assert (plain.code_source, plain.code_dim, plain.c_dim) == ('z', 4, 2)
    first = torch.cat([c for c, _ in plain.iterate(10, seed=3, batch_size=4)])
    again = torch.cat([c for c, _ in plain.iterate(10, seed=3, batch_size=4)])
    assert first.shape == (10, 4) and torch.equal(first, again)


def test_vae_model_samples_the_aggregate_posterior_or_the_prior():
    from networks.vae import Decoder, Encoder
    from training.dataset import open_dataset
    torch.manual_seed(0)
    snapshot = dict(E=Encoder(img_resolution=64, img_channels=1, code_dim=4),
                    Dec=Decoder(img_resolution=64, img_channels=1, code_dim=4))
    posterior = VAEModel(snapshot, dataset=open_dataset('dsprites'), bank_size=64)
    assert posterior.bank_mu.shape == (64, 4)
    codes, images = next(posterior.iterate(8, seed=0, batch_size=8))
    assert images.shape == (8, 1, 64, 64) and codes.shape == (8, 4)
    # Posterior codes are bank rows plus their own noise: with tiny variances they are the rows themselves.
    posterior.bank_mu = torch.arange(64 * 4, dtype=torch.float32).reshape(64, 4)
    posterior.bank_logvar = torch.full([64, 4], -30.0)
    codes = torch.cat([c for c, _ in posterior.iterate(100, seed=1, batch_size=50)])
    assert torch.allclose(codes, posterior.bank_mu[(codes[:, 0] / 4).round().long()], atol=1e-4)
    prior = generative_model(snapshot, vae_codes='prior')
    prior_codes = torch.cat([c for c, _ in prior.iterate(2000, seed=1, batch_size=500)])
    assert prior_codes.mean().abs() < 0.1 and (prior_codes.std(dim=0) - 1).abs().max() < 0.1
    with pytest.raises(MetricError, match='aggregate posterior needs'):
        VAEModel(snapshot, dataset=None)
    with pytest.raises(MetricError, match='no generator'):
        generative_model(dict(E=snapshot['E']))


def test_mig_gen_through_the_registry_for_a_plain_stylegan2_snapshot(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path))
    from networks.stylegan2 import Generator
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=64, img_channels=1, mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=64, channel_max=4))
    oracle_kwargs = dict(num_train=200, num_heldout=50, num_steps=3, batch_size=8)
    result = metric_main.calc_metric('mig_gen', snapshot_data=dict(G_ema=G), data='dsprites', progress=False,
                                     num_train=64, batch_size=32, num_z_codes=4, oracle_kwargs=oracle_kwargs)
    assert 0.0 <= result.results.mig_gen <= 1.0 and 'mig_gen_pos_x' in result.results
    assert len(list((tmp_path / 'oracles').glob('oracle-dsprites-64-*.pkl'))) == 1
    with pytest.raises(MetricError, match='no ground-truth factors'):
        metric_main.calc_metric('dci_gen', snapshot_data=dict(G_ema=G), data='digits', progress=False)
