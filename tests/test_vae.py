"""VAE stage (stage 1 of ID-GAN): networks, objectives, the training loop, snapshots and the loader."""

import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import train
from networks.vae import CodeDiscriminator, Decoder, Encoder, VAEConfigError, conv_channels
from training import vae_objectives
from training.snapshot import SnapshotError
from training.training_loop import save_image_grid
from training.vae_loop import TRAVERSAL_SPACING, traversal_grid, vae_training_loop
from training.vae_objectives.base import gaussian_kl, gaussian_log_density, kl_decomposition, reconstruction_nll
from training.vae_objectives.betavae import BetaVAE
from training.vae_objectives.btcvae import BetaTCVAE
from training.vae_objectives.factorvae import FactorVAE, permute_dims
from training.vae_snapshot import VAESnapshotError, load_vae_encoder

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_RES = 16




# ----------------------------------------------------------------------------------------------
# Networks.

def test_encoder_has_the_official_64x64_layout():
    E = Encoder(img_resolution=64, img_channels=1, code_dim=10)
    convs = [m for m in E.trunk if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == \
        [(32, (4, 4), (2, 2)), (32, (4, 4), (2, 2)), (64, (4, 4), (2, 2)), (64, (4, 4), (2, 2))]
    assert (E.fc.in_features, E.fc.out_features, E.head.out_features) == (64 * 4 * 4, 256, 20)
    # Hand count: convs 544 + 16416 + 32832 + 65600, fc 262400, head 5140.
    assert sum(p.numel() for p in E.parameters()) == 382932


@pytest.mark.parametrize('res,channels', [(32, 1), (64, 3), (128, 1)])
def test_encoder_and_decoder_shapes_at_each_resolution(res, channels):
    E = Encoder(img_resolution=res, img_channels=channels, code_dim=7)
    Dec = Decoder(img_resolution=res, img_channels=channels, code_dim=7)
    mu, logvar = E(torch.zeros(3, channels, res, res))
    assert mu.shape == logvar.shape == (3, 7)
    assert Dec(mu).shape == (3, channels, res, res)
    assert len(conv_channels(res)) == int(math.log2(res)) - 2


def test_conv_channels_rule():
    assert conv_channels(32) == [32, 64, 64]
    assert conv_channels(256) == [32, 32, 32, 32, 64, 64]


def test_unsupported_resolution_is_a_clear_error():
    with pytest.raises(VAEConfigError, match='power of two'):
        Encoder(img_resolution=48)


def test_code_heads_stay_fp32_under_bf16_autocast():
    E = Encoder(img_resolution=32, img_channels=1, code_dim=4)
    Dec = Decoder(img_resolution=32, img_channels=1, code_dim=4)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.autocast('cpu', dtype=torch.bfloat16):
        mu, logvar = E(x)
        logits = Dec(mu)
    assert mu.dtype == logvar.dtype == torch.float32
    assert logits.dtype == torch.bfloat16
    mu32, _ = E(x)
    torch.testing.assert_close(mu, mu32, atol=0.05, rtol=0.05)


# ----------------------------------------------------------------------------------------------
# Objectives: hand computations.

def test_gaussian_kl_matches_hand_computation():
    mu = torch.tensor([[1.0, 0.0, 0.5]])
    logvar = torch.tensor([[0.0, math.log(4.0), math.log(0.25)]])
    expected = [0.5, 0.5 * (4 - 1 - math.log(4)), 0.5 * (0.25 + 0.25 - 1 - math.log(0.25))]
    torch.testing.assert_close(gaussian_kl(mu, logvar)[0], torch.tensor(expected))
    reference = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * logvar).exp()),
                                                  torch.distributions.Normal(0.0, 1.0))
    torch.testing.assert_close(gaussian_kl(mu, logvar), reference)


def test_bernoulli_and_gaussian_reconstruction_match_hand_computation():
    x = torch.tensor([[[[1.0, -1.0], [1.0, 1.0]]]])          # targets 1, 0, 1, 1
    logits = torch.tensor([[[[0.0, 0.0], [2.0, -1.0]]]])
    bce = math.log(2) + math.log(2) + math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1))
    assert reconstruction_nll(logits, x, 'bernoulli').item() == pytest.approx(bce, rel=1e-6)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    sse = (0.5 - 1) ** 2 + 0.5 ** 2 + (sig(2) - 1) ** 2 + (sig(-1) - 1) ** 2
    assert reconstruction_nll(logits, x, 'gaussian').item() == pytest.approx(sse, rel=1e-6)


def test_kl_decomposition_matches_hand_computation_on_two_samples():
    code = torch.tensor([[0.5], [-1.0]])
    mu = torch.tensor([[0.0], [-0.5]])
    logvar = torch.tensor([[0.0], [math.log(0.5)]])
    N, M = 100, 2

    def log_normal(z, m, var):
        return -0.5 * (math.log(2 * math.pi * var) + (z - m) ** 2 / var)
    variances = [1.0, 0.5]
    for i in range(2):
        z = code[i, 0].item()
        log_q_z = math.log(sum(math.exp(log_normal(z, mu[j, 0].item(), variances[j])) for j in range(2))) \
            - math.log(N * M)
        parts = kl_decomposition(code, mu, logvar, dataset_size=N)
        # One dimension: q(z) and its only marginal coincide, so TC is exactly zero.
        assert parts['tc'][i].item() == pytest.approx(0.0, abs=1e-6)
        assert parts['mi'][i].item() == pytest.approx(log_normal(z, mu[i, 0].item(), variances[i]) - log_q_z, rel=1e-5)
        assert parts['dimwise_kl'][i].item() == pytest.approx(log_q_z - log_normal(z, 0.0, 1.0), rel=1e-5)


def test_stratified_kl_decomposition_matches_hand_computation_on_two_samples():
    code = torch.tensor([[0.5], [-1.0]])
    mu = torch.tensor([[0.0], [-0.5]])
    logvar = torch.tensor([[0.0], [math.log(0.5)]])
    N = 100

    def normal(z, m, var):
        return math.exp(-0.5 * (z - m) ** 2 / var) / math.sqrt(2 * math.pi * var)
    variances = [1.0, 0.5]
    parts = kl_decomposition(code, mu, logvar, dataset_size=N, estimator='mss')
    for i in range(2):
        z, other = code[i, 0].item(), 1 - i
        # Own image weight 1/N, the one other image of the batch stands for the other N - 1.
        q_z = normal(z, mu[i, 0].item(), variances[i]) / N + normal(z, mu[other, 0].item(), variances[other]) * (N - 1) / N
        assert parts['tc'][i].item() == pytest.approx(0.0, abs=1e-6)
        assert parts['mi'][i].item() == pytest.approx(math.log(normal(z, mu[i, 0].item(), variances[i]) / q_z), rel=1e-5)
        assert parts['dimwise_kl'][i].item() == pytest.approx(math.log(q_z / normal(z, 0.0, 1.0)), rel=1e-5)


def test_mws_adds_its_constant_after_the_logsumexp():
    # Bit for bit as the estimator has always been computed: a last-bit change alters whole training
    # runs (docs/VAE.md), and RESULTS.md's beta-TCVAE rows were trained with this arithmetic.
    gen = torch.Generator().manual_seed(4)
    mu, logvar = torch.randn(64, 10, generator=gen), torch.randn(64, 10, generator=gen) - 2
    code = mu + torch.randn(64, 10, generator=gen) * (0.5 * logvar).exp()
    pairwise = gaussian_log_density(code[:, None, :], mu[None, :, :], logvar[None, :, :])
    log_norm = math.log(737280 * 64)
    tc = (torch.logsumexp(pairwise.sum(dim=2), dim=1) - log_norm) - (torch.logsumexp(pairwise, dim=1) - log_norm).sum(dim=1)
    assert torch.equal(kl_decomposition(code, mu, logvar, dataset_size=737280)['tc'], tc)


def test_tc_estimators_on_a_collapsed_code():
    # Every posterior is the prior: q(z) = p(z), so MI and TC are 0 and all the KL is dimension-wise.
    gen = torch.Generator().manual_seed(3)
    code, zeros = torch.randn(32, 4, generator=gen), torch.zeros(32, 4)
    N = 5000
    mss = kl_decomposition(code, zeros, zeros, dataset_size=N, estimator='mss')
    torch.testing.assert_close(mss['tc'], torch.zeros(32), atol=1e-4, rtol=0)
    torch.testing.assert_close(mss['mi'], torch.zeros(32), atol=1e-4, rtol=0)
    torch.testing.assert_close(mss['dimwise_kl'], mss['kl_sample'], atol=1e-4, rtol=0)
    # Minibatch-weighted sampling's weights sum to 1/N: its TC reads (D - 1) log N here.
    mws = kl_decomposition(code, zeros, zeros, dataset_size=N, estimator='mws')
    torch.testing.assert_close(mws['tc'], torch.full((32,), 3 * math.log(N)), atol=1e-3, rtol=0)


def test_tc_estimator_rejects_bad_input():
    code = torch.zeros(1, 2)
    with pytest.raises(ValueError, match='at least 2 codes'):
        kl_decomposition(code, code, code, dataset_size=10, estimator='mss')
    with pytest.raises(ValueError, match='at least the batch size'):
        kl_decomposition(torch.zeros(8, 2), torch.zeros(8, 2), torch.zeros(8, 2), dataset_size=4, estimator='mss')
    with pytest.raises(ValueError, match='unknown TC estimator'):
        kl_decomposition(code, code, code, dataset_size=10, estimator='exact')
    with pytest.raises(ValueError, match='unknown TC estimator'):
        BetaTCVAE(beta=6, tc_estimator='exact', code_dim=2, dataset_size=10)


@pytest.mark.parametrize('estimator', ['mws', 'mss'])
def test_kl_decomposition_sums_to_the_kl_on_a_batch(estimator):
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(16, 3, generator=gen)
    logvar = torch.randn(16, 3, generator=gen) * 0.3 - 1
    samples = []
    for _ in range(400):
        code = mu + torch.randn(16, 3, generator=gen) * (0.5 * logvar).exp()
        parts = kl_decomposition(code, mu, logvar, dataset_size=1000, estimator=estimator)
        total = parts['mi'] + parts['tc'] + parts['dimwise_kl']
        torch.testing.assert_close(total, parts['kl_sample'], atol=1e-4, rtol=1e-5)
        samples.append(total)
    # Its expectation over the posterior sample is the closed-form KL, per image.
    estimate = torch.stack(samples).mean(dim=0)
    torch.testing.assert_close(estimate, gaussian_kl(mu, logvar).sum(dim=1), atol=0.15, rtol=0.05)


@pytest.mark.parametrize('estimator', ['mws', 'mss'])
def test_tc_estimate_is_large_for_correlated_codes_and_small_for_independent_ones(estimator):
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(256, 1, generator=gen)
    correlated = torch.cat([base, base], dim=1)
    independent = torch.randn(256, 2, generator=gen)
    logvar = torch.full((256, 2), math.log(0.01))
    tc_corr = kl_decomposition(correlated, correlated, logvar, dataset_size=256, estimator=estimator)['tc'].mean()
    tc_ind = kl_decomposition(independent, independent, logvar, dataset_size=256, estimator=estimator)['tc'].mean()
    assert tc_corr > tc_ind + 1.0


def test_betavae_and_btcvae_regularisers():
    gen = torch.Generator().manual_seed(2)
    mu, logvar = torch.randn(8, 4, generator=gen), torch.randn(8, 4, generator=gen) * 0.2
    code = mu + torch.randn(8, 4, generator=gen) * (0.5 * logvar).exp()
    kl = gaussian_kl(mu, logvar).sum(dim=1)
    reg, _ = BetaVAE(beta=8, code_dim=4, dataset_size=100).regulariser(mu, logvar, code)
    torch.testing.assert_close(reg, 8 * kl)
    reg1, _ = BetaTCVAE(beta=1, code_dim=4, dataset_size=100).regulariser(mu, logvar, code)
    torch.testing.assert_close(reg1, kl)  # beta = 1: the TC weight is that of the plain KL
    reg6, stats = BetaTCVAE(beta=6, code_dim=4, dataset_size=100).regulariser(mu, logvar, code)
    torch.testing.assert_close(reg6, kl + 5 * stats['tc'])
    reg6s, stats_s = BetaTCVAE(beta=6, tc_estimator='mss', code_dim=4, dataset_size=100).regulariser(mu, logvar, code)
    torch.testing.assert_close(reg6s, kl + 5 * stats_s['tc'])
    torch.testing.assert_close(stats_s['tc'], kl_decomposition(code, mu, logvar, 100, 'mss')['tc'])
    assert not torch.allclose(stats_s['tc'], stats['tc'])


def test_permute_dims_permutes_each_dimension_independently():
    code = torch.arange(200).reshape(50, 4).float()     # every value unique, column = value % 4
    shuffled = permute_dims(code, generator=torch.Generator().manual_seed(0))
    for dim in range(4):   # each column holds exactly its own values
        assert torch.equal(shuffled[:, dim].sort().values, code[:, dim])
    rows = (shuffled - torch.arange(4)) / 4             # original row index of every entry
    orders = [tuple(rows[:, dim].long().tolist()) for dim in range(4)]
    assert len(set(orders)) == 4                         # a different permutation per dimension
    kept_rows = sum(bool((rows[i] == rows[i, 0]).all()) for i in range(50))
    assert kept_rows < 5                                 # rows are broken up, not moved as a whole


def test_factorvae_discriminator_learns_total_correlation_and_vae_loss_leaves_it_alone():
    torch.manual_seed(0)
    obj = FactorVAE(gamma=10, code_dim=2, dataset_size=100, disc_hidden=32, disc_layers=2, disc_lr=1e-3)
    base = torch.randn(512, 1)
    correlated = torch.cat([base, base + 0.05 * torch.randn(512, 1)], dim=1)
    for _ in range(150):
        obj.after_vae_step(correlated)
    code = correlated.clone().requires_grad_(True)
    reg, stats = obj.regulariser(torch.zeros(512, 2), torch.zeros(512, 2), code)
    assert stats['tc'].mean() > 0.5       # D separates joint codes from permuted ones
    reg.sum().backward()
    assert code.grad is not None and code.grad.abs().sum() > 0
    assert all(p.grad is None for p in obj.D_tc.parameters())
    assert isinstance(obj.modules()['D_tc'], CodeDiscriminator)


def test_registry_has_the_three_objectives_and_takes_a_new_one():
    assert {'betavae', 'btcvae', 'factorvae'} <= set(vae_objectives.names())
    assert vae_objectives.class_name('btcvae') == 'training.vae_objectives.btcvae.BetaTCVAE'

    @vae_objectives.register('test-plainvae')
    class PlainVAE(BetaVAE):
        pass
    try:
        assert vae_objectives.get('test-plainvae') is PlainVAE
        with pytest.raises(KeyError, match='betavae'):
            vae_objectives.get('no-such-objective')
    finally:
        vae_objectives._registry.pop('test-plainvae')


# ----------------------------------------------------------------------------------------------
# Training loop, snapshots, loader.

def _write_toy_dataset(path, count=64):
    """White squares (4x4) at random positions on 16x16 black: position is the only factor."""
    os.makedirs(path)
    rnd = np.random.RandomState(0)
    for index in range(count):
        image = np.zeros([TOY_RES, TOY_RES], dtype=np.uint8)
        y, x = rnd.randint(0, TOY_RES - 4, size=2)
        image[y:y + 4, x:x + 4] = 255
        PIL.Image.fromarray(image, 'L').save(os.path.join(path, f'{index:03d}.png'))
    return path


def _loop_kwargs(data_path, run_dir, **overrides):
    kwargs = dict(
        run_dir=str(run_dir),
        training_set_kwargs=dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=str(data_path)),
        data_loader_kwargs=dict(num_workers=0),
        E_kwargs=dict(class_name='networks.vae.Encoder', code_dim=3),
        Dec_kwargs=dict(class_name='networks.vae.Decoder', code_dim=3),
        objective_kwargs=dict(class_name='training.vae_objectives.betavae.BetaVAE', beta=1.0, recon='bernoulli'),
        opt_kwargs=dict(class_name='torch.optim.Adam', lr=3e-3),
        batch_size=16, total_kimg=2.4, kimg_per_tick=0.6, image_snapshot_ticks=2, network_snapshot_ticks=2,
        random_seed=0, precision='fp32', device='cpu', verbose=False)
    kwargs.update(overrides)
    os.makedirs(kwargs['run_dir'], exist_ok=True)
    return kwargs


@pytest.fixture(scope='module')
def toy_run(tmp_path_factory):
    """150 steps of a tiny beta-VAE on the toy squares; returns (data path, run dir, last snapshot)."""
    root = tmp_path_factory.mktemp('vae')
    data = _write_toy_dataset(str(root / 'squares'))
    kwargs = _loop_kwargs(data, root / 'run')
    last = vae_training_loop(**kwargs)
    return data, kwargs['run_dir'], last


def _stats(run_dir):
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        return [json.loads(line) for line in f]


def test_training_a_tiny_vae_lowers_the_loss(toy_run):
    _data, run_dir, _last = toy_run
    stats = _stats(run_dir)
    assert [round(s['Progress/kimg']['mean'], 3) for s in stats] == [0.016, 0.624, 1.232, 1.84, 2.4]
    first, last = stats[0]['Loss/VAE/loss']['mean'], stats[-1]['Loss/VAE/loss']['mean']
    assert last < 0.5 * first, (first, last)
    assert stats[-1]['Loss/VAE/kl']['mean'] > 1.0            # the code is used, not collapsed
    assert {f'VAE/kl_dim/{d:02d}' for d in range(3)} <= set(stats[-1])


def test_run_writes_grids_and_snapshots(toy_run):
    _data, run_dir, last = toy_run
    files = set(os.listdir(run_dir))
    assert {'reals.png', 'recon_init.png', 'traversal_init.png', 'recon000002.png', 'traversal000002.png'} <= files
    assert sorted(f for f in files if f.startswith('vae-snapshot-')) == \
        ['vae-snapshot-000000.pkl', 'vae-snapshot-000001.pkl', 'vae-snapshot-000002.pkl']
    assert os.path.basename(last) == 'vae-snapshot-000002.pkl'
    with PIL.Image.open(os.path.join(run_dir, 'traversal000002.png')) as image:
        # 11 steps x code_dim rows, grey lines between the tiles
        assert image.size == (11 * TOY_RES + 10 * TRAVERSAL_SPACING, 3 * TOY_RES + 2 * TRAVERSAL_SPACING)
    with open(last, 'rb') as f:
        data = pickle.load(f)
    assert {'E', 'Dec', 'vae_kwargs', 'training_set_kwargs', 'resume_state'} <= set(data)
    assert data['resume_state']['cur_nimg'] == 2400


def test_image_grid_spacing_separates_tiles_with_grey_lines(tmp_path):
    tiles = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1).repeat(4, axis=2).repeat(5, axis=3) * 40  # 4 x 5 tiles
    save_image_grid(tiles, str(tmp_path / 'plain.png'), drange=[0, 255], grid_size=(3, 2))
    save_image_grid(tiles, str(tmp_path / 'spaced.png'), drange=[0, 255], grid_size=(3, 2), spacing=2, spacing_value=7)
    plain = np.asarray(PIL.Image.open(tmp_path / 'plain.png'))
    spaced = np.asarray(PIL.Image.open(tmp_path / 'spaced.png'))
    assert plain.shape == (2 * 4, 3 * 5)
    assert spaced.shape == (2 * 4 + 2, 3 * 5 + 2 * 2)
    for index in range(6):
        row, col = divmod(index, 3)
        assert (plain[row * 4:(row + 1) * 4, col * 5:(col + 1) * 5] == index * 40).all()
        assert (spaced[row * 6:row * 6 + 4, col * 7:col * 7 + 5] == index * 40).all()
    assert (spaced[4:6, :] == 7).all() and (spaced[:, 5:7] == 7).all() and (spaced[:, 12:14] == 7).all()
    assert not os.path.exists(tmp_path / 'bad.png')
    with pytest.raises(ValueError, match='spacing'):
        save_image_grid(tiles, str(tmp_path / 'bad.png'), drange=[0, 255], grid_size=(3, 2), spacing=-1)


def test_traversal_row_d_sweeps_dimension_d_from_the_posterior_mean(toy_run):
    _data, _run_dir, last = toy_run
    with open(last, 'rb') as f:
        data = pickle.load(f)
    E, Dec = data['E'], data['Dec']
    image = torch.rand(1, TOY_RES, TOY_RES) * 2 - 1
    grid = torch.from_numpy(traversal_grid(E, Dec, image)).reshape(3, 11, 1, TOY_RES, TOY_RES)
    with torch.no_grad():
        mu = E(image[None])[0][0]
        for dim in range(3):
            codes = mu.repeat(11, 1)
            codes[:, dim] = torch.linspace(-3, 3, 11)
            torch.testing.assert_close(grid[dim], Dec.to_image(Dec(codes)), atol=1e-5, rtol=0)


def test_snapshot_round_trip_in_a_fresh_process_without_the_training_code(toy_run, tmp_path):
    _data, _run_dir, last = toy_run
    E = load_vae_encoder(last)
    x = torch.rand(4, 1, TOY_RES, TOY_RES) * 2 - 1
    with torch.no_grad():
        mu, logvar = E(x)
    torch.save(dict(x=x), tmp_path / 'x.pt')
    # Only dnnlib and torch_utils are importable there: the networks come from the pickle's source.
    isolated = tmp_path / 'isolated'
    for package in ('dnnlib', 'torch_utils'):
        shutil.copytree(os.path.join(REPO_ROOT, package), isolated / package,
                        ignore=shutil.ignore_patterns('__pycache__'))
    script = textwrap.dedent(f'''
        import pickle, sys, torch
        class NoTrainingCode:  # the project may be pip-installed: forbid its training code outright
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('networks', 'training'):
                    raise ImportError(name + ' is not available in this process')
        sys.meta_path.insert(0, NoTrainingCode())
        with open({str(last)!r}, 'rb') as f:
            data = pickle.load(f)
        E = data['E']
        x = torch.load({str(tmp_path / 'x.pt')!r})['x']
        with torch.no_grad():
            mu, logvar = E(x)
            img = data['Dec'].to_image(data['Dec'](mu))
        torch.save(dict(mu=mu, logvar=logvar, shape=tuple(img.shape), code_dim=E.code_dim), {str(tmp_path / 'out.pt')!r})
    ''')
    env = dict(os.environ, PYTHONPATH=str(isolated))
    result = subprocess.run([sys.executable, '-c', script], cwd=str(isolated), env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    out = torch.load(tmp_path / 'out.pt')
    assert torch.equal(out['mu'], mu) and torch.equal(out['logvar'], logvar)
    assert out['shape'] == (4, 1, TOY_RES, TOY_RES) and out['code_dim'] == 3


def test_loader_returns_a_frozen_encoder_in_eval_mode(toy_run):
    _data, _run_dir, last = toy_run
    E = load_vae_encoder(last, device='cpu', resolution=TOY_RES, num_channels=1)
    assert not E.training and all(not p.requires_grad for p in E.parameters())
    assert (E.img_resolution, E.img_channels, E.code_dim) == (TOY_RES, 1, 3)
    load_vae_encoder(last, resolution=4 * TOY_RES)          # a larger generator area-downsamples


def test_loader_rejects_a_mismatched_dataset(toy_run):
    _data, _run_dir, last = toy_run
    from training.dataset import open_dataset
    shapes3d = open_dataset('shapes3d')                       # 64x64 RGB vs the 16x16 grey encoder
    with pytest.raises(SnapshotError, match='3 channel'):
        load_vae_encoder(last, resolution=shapes3d.resolution, num_channels=shapes3d.num_channels)
    with pytest.raises(VAESnapshotError, match='24x24'):
        load_vae_encoder(last, resolution=24, num_channels=1)
    with pytest.raises(VAESnapshotError, match='8x8'):
        load_vae_encoder(last, resolution=8)


def test_loader_rejects_gan_snapshots_and_garbage(tmp_path):
    gan = tmp_path / 'network-snapshot-000000.pkl'
    gan.write_bytes(pickle.dumps({'G_ema': torch.nn.Linear(1, 1)}))
    with pytest.raises(VAESnapshotError, match='GAN snapshot'):
        load_vae_encoder(gan)
    junk = tmp_path / 'junk.pkl'
    junk.write_bytes(b'not a pickle')
    with pytest.raises(VAESnapshotError, match='truncated or not a pickle'):
        load_vae_encoder(junk)


def test_resume_continues_exactly(toy_run, tmp_path):
    data, run_dir, last = toy_run
    # The uninterrupted run wrote vae-snapshot-000001.pkl at 1.232 kimg; continue it to 2.4 kimg.
    kwargs = _loop_kwargs(data, tmp_path / 'resumed', resume_pkl=os.path.join(run_dir, 'vae-snapshot-000001.pkl'))
    resumed = vae_training_loop(**kwargs)
    with open(last, 'rb') as f:
        expected = pickle.load(f)
    with open(resumed, 'rb') as f:
        got = pickle.load(f)
    for name in ('E', 'Dec'):
        for a, b in zip(expected[name].state_dict().values(), got[name].state_dict().values()):
            assert torch.equal(a, b)


@pytest.mark.parametrize('cfg', ['btcvae', 'factorvae'])
def test_other_objectives_train_a_few_steps_in_bf16(cfg, tmp_path, toy_run):
    data = toy_run[0]
    objective = dict(class_name=vae_objectives.class_name(cfg), recon='gaussian')
    if cfg == 'factorvae':
        objective.update(disc_hidden=32, disc_layers=2)
    last = vae_training_loop(**_loop_kwargs(data, tmp_path / cfg, objective_kwargs=objective, total_kimg=0.064,
                                            kimg_per_tick=0.032, precision='bf16'))
    stats = _stats(os.path.dirname(last))
    assert all(np.isfinite(s['Loss/VAE/tc']['mean']) for s in stats)
    with open(last, 'rb') as f:
        snapshot = pickle.load(f)
    assert ('D_tc' in snapshot) == (cfg == 'factorvae')


# ----------------------------------------------------------------------------------------------
# train.py.

def test_train_cli_dry_run_configures_the_vae(tmp_path):
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--data=digits', '--cfg=btcvae', '--beta=3',
                                             '--code-dim=5', '--lr=5e-4', '--kimg=1', '--precision=fp32', '--dry-run'])
    assert result.exit_code == 0, result.output
    assert '"class_name": "training.vae_objectives.btcvae.BetaTCVAE"' in result.output
    assert '"beta": 3.0' in result.output and '"code_dim": 5' in result.output and '"lr": 0.0005' in result.output
    assert 'bernoulli decoder' in result.output         # --recon=auto on grey data
    assert '"tc_estimator": "mws"' in result.output
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--data=digits', '--cfg=btcvae',
                                             '--tc-estimator=mss', '--kimg=1', '--dry-run'])
    assert result.exit_code == 0, result.output
    assert '"tc_estimator": "mss"' in result.output


def test_train_cli_rejects_options_of_other_objectives(tmp_path):
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--data=digits', '--cfg=factorvae',
                                             '--beta=3', '--dry-run'])
    assert result.exit_code != 0
    assert '--beta does not apply to --cfg=factorvae (it uses --gamma)' in result.output
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--data=digits', '--cfg=betavae',
                                             '--tc-estimator=mss', '--dry-run'])
    assert result.exit_code != 0
    assert '--tc-estimator does not apply to --cfg=betavae (it uses --beta)' in result.output
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--data=digits', '--cfg=stylegan2',
                                             '--tc-estimator=mss', '--dry-run'])
    assert result.exit_code != 0
    assert '--tc-estimator applies to the VAE configs' in result.output


def test_train_cli_rejects_resuming_a_vae_on_other_data(toy_run, tmp_path):
    last = toy_run[2]
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--data=digits', '--cfg=betavae',
                                             f'--resume={last}', '--code-dim=3', '--dry-run'])
    assert result.exit_code != 0
    assert '32x32' in result.output and 'Traceback' not in result.output
