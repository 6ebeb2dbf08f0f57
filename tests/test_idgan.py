"""ID-GAN: the posterior-bank sampler, the code-preserving mapping, the distillation term, --cfg=idgan."""

import math
import os
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fresh_process import run_python

import dnnlib
from disentangle.idgan import DistillationTerm, gaussian_nll, warmup_factor
from disentangle.latents import CodeMappingNetwork, PosteriorBankLatent, encode_images
from networks.stylegan2 import Discriminator, Generator
from networks.vae import Decoder, Encoder
from torch_utils import misc, training_stats
from training import training_loop as tl
from training.loss import StyleGAN2Loss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RES = 16
CODE_DIM = 3




class SquaresDataset:
    """White 4x4 squares on 16x16 black; enough of the Dataset interface for prepare() and the loop."""

    def __init__(self, count=40, seed=0):
        rnd = np.random.RandomState(seed)
        self.images = np.zeros([count, 1, RES, RES], dtype=np.uint8)
        for i, (y, x) in enumerate(rnd.randint(0, RES - 4, size=[count, 2])):
            self.images[i, 0, y:y + 4, x:x + 4] = 255
        self.resolution, self.num_channels = RES, 1

    def __len__(self):
        return len(self.images)

    def __getitem__(self, idx):
        return self.images[idx], np.zeros([0], dtype=np.float32)


def tiny_encoder(seed=0):
    torch.manual_seed(seed)
    return Encoder(img_resolution=RES, img_channels=1, code_dim=CODE_DIM).eval().requires_grad_(False)


def prepared_sampler(nuisance_dim=2, encoder=None, bank_size=32):
    sampler = PosteriorBankLatent(code_dim=CODE_DIM, nuisance_dim=nuisance_dim, bank_size=bank_size, verbose=False)
    sampler.prepare(SquaresDataset(), encoder=encoder or tiny_encoder())
    return sampler


def tiny_generator(z_dim, code_dim, seed=0):
    torch.manual_seed(seed)
    return Generator(z_dim=z_dim, c_dim=0, w_dim=16, img_resolution=RES, img_channels=1,
                     mapping_kwargs=dict(class_name='disentangle.latents.CodeMappingNetwork', code_dim=code_dim,
                                         num_layers=1),
                     synthesis_kwargs=dict(channel_base=128, channel_max=8))


def tiny_discriminator(seed=1):
    torch.manual_seed(seed)
    return Discriminator(c_dim=0, img_resolution=RES, img_channels=1, channel_base=128, channel_max=8,
                         epilogue_kwargs=dict(mbstd_group_size=2))


# ----------------------------------------------------------------------------------------------
# The posterior bank.

def test_bank_holds_the_encoded_subset_of_the_data():
    encoder = tiny_encoder()
    sampler = PosteriorBankLatent(code_dim=CODE_DIM, bank_size=25, bank_seed=4, verbose=False)
    data = SquaresDataset()
    sampler.prepare(data, encoder=encoder)
    rows = np.sort(np.random.RandomState(4).choice(len(data), 25, replace=False))
    mu, logvar = encoder(torch.from_numpy(data.images[rows]).float() / 127.5 - 1)
    torch.testing.assert_close(sampler.bank_mu, mu)
    torch.testing.assert_close(sampler.bank_logvar, logvar)


def test_bank_sampler_moments_match_the_encoded_data():
    sampler = prepared_sampler(nuisance_dim=2)
    # Make the posteriors distinct and informative, so wrong moments would show.
    mu = torch.linspace(-2, 2, 32)[:, None] * torch.tensor([1.0, -0.5, 0.25]) + torch.tensor([0.5, 0.0, -1.0])
    logvar = torch.log(torch.tensor([0.04, 0.25, 1.0])).repeat(32, 1)
    sampler.set_bank(mu, logvar)
    out = sampler.sample(200000, generator=torch.Generator().manual_seed(0))
    assert out.z.shape == (200000, CODE_DIM + 2)
    torch.testing.assert_close(out.z[:, :CODE_DIM], out.code)
    torch.testing.assert_close(out.z[:, CODE_DIM:], out.nuisance)
    # Aggregate posterior = mixture of the bank's Gaussians: mean of mu, variance = var(mu) + mean(sigma^2).
    expected_mean = mu.mean(0)
    expected_var = mu.var(0, unbiased=False) + logvar.exp().mean(0)
    torch.testing.assert_close(out.code.mean(0), expected_mean, atol=0.02, rtol=0)
    torch.testing.assert_close(out.code.var(0), expected_var, atol=0.02, rtol=0.02)
    torch.testing.assert_close(out.nuisance.mean(0), torch.zeros(2), atol=0.01, rtol=0)
    torch.testing.assert_close(out.nuisance.var(0), torch.ones(2), atol=0.02, rtol=0)


def test_nuisance_dim_zero_gives_the_code_alone():
    sampler = prepared_sampler(nuisance_dim=0)
    out = sampler.sample(5)
    assert sampler.z_dim == CODE_DIM and out.z.shape == (5, CODE_DIM) and out.nuisance.shape == (5, 0)
    torch.testing.assert_close(out.z, out.code)
    G = tiny_generator(z_dim=CODE_DIM, code_dim=CODE_DIM)
    assert G(out.z, torch.zeros(5, 0)).shape == (5, 1, RES, RES)


def test_seeded_latents_are_reproducible_and_differ_between_seeds():
    sampler = prepared_sampler()
    a, b, c = sampler.sample_seed(7), sampler.sample_seed(7), sampler.sample_seed(8)
    torch.testing.assert_close(a.z, b.z)
    assert not torch.allclose(a.z, c.z)


def test_sampling_before_prepare_is_a_clear_error():
    with pytest.raises(RuntimeError, match='call prepare'):
        PosteriorBankLatent(code_dim=CODE_DIM).sample(2)


def test_code_quantiles_bracket_the_bank():
    sampler = prepared_sampler()
    sampler.set_bank(torch.zeros(32, CODE_DIM), torch.zeros(32, CODE_DIM))  # aggregate posterior = N(0, I)
    lo, hi = sampler.code_quantiles((0.025, 0.975))
    torch.testing.assert_close(lo, torch.full([CODE_DIM], -1.96), atol=0.06, rtol=0)
    torch.testing.assert_close(hi, torch.full([CODE_DIM], 1.96), atol=0.06, rtol=0)


# ----------------------------------------------------------------------------------------------
# The mapping network.

def test_mapping_keeps_the_code_scale_and_normalises_only_the_nuisance():
    torch.manual_seed(0)
    mapping = CodeMappingNetwork(z_dim=5, c_dim=0, w_dim=8, num_ws=2, code_dim=3, num_layers=2).eval()
    z = torch.randn(4, 5)
    w = mapping(z, None)
    assert w.shape == (4, 2, 8)
    # Scaling the code changes w (the StyleGAN2 mapping could not tell c from 2c) ...
    doubled = z.clone()
    doubled[:, :3] *= 2
    assert (mapping(doubled, None) - w).abs().max() > 1e-3
    # ... scaling the nuisance does not: it is normalised to unit second moment.
    louder = z.clone()
    louder[:, 3:] *= 5
    torch.testing.assert_close(mapping(louder, None), w)
    # Without nuisance, the MLP sees the code exactly.
    net = mapping.net
    x = torch.cat([z[:, :3], z[:, 3:] * (z[:, 3:].square().mean(1, keepdim=True) + 1e-8).rsqrt()], 1)
    for idx in range(net.num_layers):
        x = getattr(net, f'fc{idx}')(x)
    torch.testing.assert_close(w[:, 0], x)


# ----------------------------------------------------------------------------------------------
# The distillation term.

def test_gaussian_nll_matches_the_hand_computation():
    code = torch.tensor([[0.5, -1.0]])
    mu = torch.tensor([[0.0, -0.5]])
    logvar = torch.tensor([[math.log(0.25), 0.0]])
    # dim 0: 0.5 * (log 2pi + log 0.25 + 0.25 / 0.25); dim 1: 0.5 * (log 2pi + 0 + 0.25 / 1)
    expected = 0.5 * (math.log(2 * math.pi) + math.log(0.25) + 1.0) + 0.5 * (math.log(2 * math.pi) + 0.25)
    torch.testing.assert_close(gaussian_nll(code, mu, logvar), torch.tensor([expected]))
    # The floor replaces a smaller log-variance.
    floored = gaussian_nll(code, mu, torch.tensor([[-20.0, 0.0]]), min_logvar=torch.tensor([math.log(0.25), -5.0]))
    torch.testing.assert_close(floored, torch.tensor([expected]))


def test_warmup_is_linear_then_flat():
    assert [warmup_factor(n, 2.0) for n in (0, 500, 1000, 2000, 9000)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def _term_setup(weight=0.3, warmup=0.0):
    encoder = tiny_encoder()
    sampler = prepared_sampler(nuisance_dim=2, encoder=encoder)
    G = tiny_generator(z_dim=sampler.z_dim, code_dim=CODE_DIM).train().requires_grad_(False)
    D = tiny_discriminator().train().requires_grad_(False)
    term = DistillationTerm(G=G, D=D, latent_sampler=sampler, training_set=None, device='cpu', encoder=encoder,
                            distill_weight=weight, distill_warmup=warmup)
    loss = StyleGAN2Loss(device='cpu', G=G, D=D, latent_sampler=sampler, style_mixing_prob=0, r1_gamma=1,
                         extra_terms=[term])
    return encoder, sampler, G, D, term, loss


def test_term_equals_weighted_nll_of_the_code_under_the_encoder():
    encoder, sampler, G, D, term, loss = _term_setup(weight=0.3, warmup=2.0)
    latents = sampler.sample(4, generator=torch.Generator().manual_seed(1))
    img = G(latents.z, torch.zeros(4, 0))
    ctx = dnnlib.EasyDict(gen_img=img, latents=latents, cur_nimg=500, loss=loss)
    value = term.g_loss(ctx)
    mu, logvar = encoder(img)
    logvar = torch.maximum(logvar, sampler.bank_logvar.min(0).values)
    var = logvar.exp()
    by_hand = 0.5 * (math.log(2 * math.pi) + logvar + (latents.code - mu) ** 2 / var)
    torch.testing.assert_close(value, 0.3 * 0.25 * by_hand.sum(1))     # 500 of 2000 warm-up images: x0.25


def test_term_area_downsamples_larger_generators_to_the_encoder():
    encoder, sampler, _G, _D, term, _loss = _term_setup(weight=1.0)
    big = torch.rand(2, 1, 2 * RES, 2 * RES) * 2 - 1
    latents = sampler.sample(2)
    value = term.g_loss(dnnlib.EasyDict(gen_img=big, latents=latents, cur_nimg=0))
    small = big.reshape(2, 1, RES, 2, RES, 2).mean([3, 5])
    mu, logvar = encoder(small)
    expected = gaussian_nll(latents.code, mu, logvar, term.min_logvar)
    torch.testing.assert_close(value, expected)


def test_term_gradient_reaches_G_only_and_E_stays_frozen():
    encoder, sampler, G, D, term, loss = _term_setup(weight=1.0)
    E_before = {name: p.clone() for name, p in encoder.named_parameters()}
    G_opt = torch.optim.Adam(G.parameters(), lr=0.01)
    latents = sampler.sample(4)
    # The term alone (no GAN loss) must move G: its gradient flows through E into the image.
    plain = StyleGAN2Loss(device='cpu', G=G, D=D, latent_sampler=sampler, style_mixing_prob=0, extra_terms=[])
    G.requires_grad_(True)
    img, _ = plain.run_G(latents, torch.zeros(4, 0))
    term.g_loss(dnnlib.EasyDict(gen_img=img, latents=latents, cur_nimg=0)).mean().backward()
    assert all(p.grad is not None for p in G.synthesis.parameters() if p.requires_grad)
    assert G.mapping.net.fc0.weight.grad.abs().sum() > 0
    # A full Gmain step with the term: D and E get no gradients, E is unchanged.
    G_opt.zero_grad(set_to_none=True)
    loss.accumulate_gradients('Gmain', torch.zeros(4, 1, RES, RES), torch.zeros(4, 0), latents, torch.zeros(4, 0),
                              gain=1, cur_nimg=0)
    G_opt.step()
    G.requires_grad_(False)
    assert all(p.grad is None for p in D.parameters())
    assert all(p.grad is None for p in encoder.parameters())
    assert not encoder.training
    for name, p in encoder.named_parameters():
        assert torch.equal(p, E_before[name]), name
    assert term.modules() == {'E': encoder}
    assert term.extra_parameters('G') == [] and term.extra_parameters('D') == []


def test_term_logs_the_nll_and_per_dimension_recovery_error():
    encoder, sampler, G, _D, term, _loss = _term_setup(weight=1.0)
    collector = training_stats.Collector(regex='.*IDGAN.*')
    latents = sampler.sample(6)
    img = G(latents.z, torch.zeros(6, 0))
    term.g_loss(dnnlib.EasyDict(gen_img=img, latents=latents, cur_nimg=0))
    collector.update()
    mu, _ = encoder(img)
    per_dim = (mu - latents.code).square().mean(0)
    for dim in range(CODE_DIM):
        assert collector.mean(f'IDGAN/recovery_mse/dim{dim:02d}') == pytest.approx(float(per_dim[dim]), rel=1e-5)
    assert collector.mean('IDGAN/recovery_mse') == pytest.approx(float(per_dim.mean()), rel=1e-5)
    assert collector.num('Loss/IDGAN/distill') == 6


def test_distillation_lowers_the_code_recovery_error():
    # G alone against the term (no D): a few hundred Adam steps must teach it to render codes E recovers.
    encoder, sampler, G, _D, term, _loss = _term_setup(weight=1.0)
    G.requires_grad_(True)
    opt = torch.optim.Adam(G.parameters(), lr=0.01, betas=(0.0, 0.99))
    gen = torch.Generator().manual_seed(0)
    probe = sampler.sample(64, generator=torch.Generator().manual_seed(123))

    def recovery():
        with torch.no_grad():
            return float((encoder(G(probe.z, torch.zeros(64, 0)))[0] - probe.code).square().mean())
    before = recovery()
    for _ in range(150):
        latents = sampler.sample(16, generator=gen)
        img = G(latents.z, torch.zeros(16, 0))
        opt.zero_grad(set_to_none=True)
        term.g_loss(dnnlib.EasyDict(gen_img=img, latents=latents, cur_nimg=0)).mean().backward()
        opt.step()
    after = recovery()
    assert after < 0.6 * before, (before, after)


# ----------------------------------------------------------------------------------------------
# Training loop, snapshots, train.py.

def _write_vae_snapshot(path, res=RES, channels=1):
    torch.manual_seed(0)
    data = dict(E=Encoder(img_resolution=res, img_channels=channels, code_dim=CODE_DIM).eval().requires_grad_(False),
                Dec=Decoder(img_resolution=res, img_channels=channels, code_dim=CODE_DIM).eval().requires_grad_(False),
                vae_kwargs={}, training_set_kwargs={})
    misc.atomic_pickle_dump(data, str(path))
    return str(path)


def _write_squares_folder(path, count=24):
    import PIL.Image
    os.makedirs(path)
    for i, image in enumerate(SquaresDataset(count).images):
        PIL.Image.fromarray(image[0], 'L').save(os.path.join(path, f'{i:03d}.png'))
    return str(path)


def idgan_loop_kwargs(root):
    """(vae pkl, training_loop kwargs) of a tiny ID-GAN run under `root` (also used by the StyleGenes tests)."""
    vae = _write_vae_snapshot(root / 'vae.pkl')
    data = _write_squares_folder(root / 'squares')
    run_dir = str(root / 'run')
    os.makedirs(run_dir)
    c = dnnlib.EasyDict(
        run_dir=run_dir,
        training_set_kwargs=dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data),
        data_loader_kwargs=dnnlib.EasyDict(num_workers=0),
        G_kwargs=dnnlib.EasyDict(class_name='networks.stylegan2.Generator', z_dim=0, w_dim=16,
                                 mapping_kwargs=dnnlib.EasyDict(class_name='disentangle.latents.CodeMappingNetwork',
                                                                code_dim=CODE_DIM, num_layers=1),
                                 synthesis_kwargs=dnnlib.EasyDict(channel_base=128, channel_max=8)),
        D_kwargs=dnnlib.EasyDict(class_name='networks.stylegan2.Discriminator', channel_base=128, channel_max=8,
                                 epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=2)),
        G_opt_kwargs=dnnlib.EasyDict(class_name='torch.optim.Adam', lr=0.0025, betas=[0.0, 0.99], eps=1e-8),
        D_opt_kwargs=dnnlib.EasyDict(class_name='torch.optim.Adam', lr=0.0025, betas=[0.0, 0.99], eps=1e-8),
        loss_kwargs=dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1.0, style_mixing_prob=0),
        latent_kwargs=dnnlib.EasyDict(class_name='disentangle.latents.PosteriorBankLatent', vae_pkl=vae,
                                      code_dim=CODE_DIM, nuisance_dim=2, bank_size=16, verbose=False),
        extra_terms_kwargs=[dnnlib.EasyDict(class_name='disentangle.idgan.DistillationTerm', vae_pkl=vae,
                                            distill_weight=0.1, distill_warmup=0)],
        G_reg_interval=2, D_reg_interval=2, batch_size=4, batch_gpu=2, ema_kimg=0.01, ema_rampup=0.05,
        total_kimg=0.012, kimg_per_tick=0.004, image_snapshot_ticks=100, network_snapshot_ticks=3,
        random_seed=0, precision='fp32', device='cpu')
    return vae, c


@pytest.fixture(scope='module')
def idgan_run(tmp_path_factory):
    """A few ID-GAN training steps through the real loop; returns (vae pkl, run dir, last snapshot)."""
    vae, c = idgan_loop_kwargs(tmp_path_factory.mktemp('idgan'))
    last = tl.training_loop(**c)
    return vae, c.run_dir, last, c


def test_training_logs_the_term_and_snapshots_carry_bank_and_encoder(idgan_run):
    vae, run_dir, last, _c = idgan_run
    import json
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        stats = [json.loads(line) for line in f]
    assert 'Loss/IDGAN/distill' in stats[-1] and 'IDGAN/recovery_mse/dim02' in stats[-1]
    with open(last, 'rb') as f:
        snap = pickle.load(f)
    with open(vae, 'rb') as f:
        E = pickle.load(f)['E']
    sampler = snap['latent']
    assert sampler.bank_mu.shape == (16, CODE_DIM) and sampler.z_dim == CODE_DIM + 2
    assert snap['G_ema'].z_dim == CODE_DIM + 2
    for (name, a), (_, b) in zip(snap['E'].named_parameters(), E.named_parameters()):
        assert torch.equal(a, b), name          # the encoder was never updated


def test_snapshots_carry_the_vae_decoder_unchanged_for_compare_vae(idgan_run):
    vae, _run_dir, last, _c = idgan_run
    with open(last, 'rb') as f:
        snap = pickle.load(f)
    with open(vae, 'rb') as f:
        Dec = pickle.load(f)['Dec']
    assert snap['Dec'].code_dim == CODE_DIM
    pairs = list(zip(snap['Dec'].state_dict().items(), Dec.state_dict().items()))
    assert pairs and all(torch.equal(a, b) for (_, a), (_, b) in pairs)


def test_snapshot_round_trips_in_a_fresh_process_without_the_plugin(idgan_run, tmp_path):
    # Generation needs neither the dataset, nor the VAE file, nor the disentangle/ source.
    _vae, _run_dir, last, _c = idgan_run
    script = (
        'import pickle, sys, torch\n'
        'sys.modules["disentangle"] = None\n'           # importing the plug-in would now fail
        f'snap = pickle.load(open({last!r}, "rb"))\n'
        'lat = snap["latent"].sample_seed(3)\n'
        'img = snap["G_ema"](lat.z, torch.zeros(1, 0), noise_mode="const")\n'
        'mu, logvar = snap["E"](img)\n'
        'print(tuple(img.shape), tuple(mu.shape), snap["latent"].layout()["kind"], float(lat.z.sum()))\n')
    out = run_python(script, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f'(1, 1, {RES}, {RES}) (1, {CODE_DIM}) posterior_bank')
    with open(last, 'rb') as f:
        snap = pickle.load(f)
    assert float(out.stdout.split()[-1]) == pytest.approx(float(snap['latent'].sample_seed(3).z.sum()), abs=1e-5)


def test_resume_restores_the_bank_from_the_snapshot(idgan_run, tmp_path):
    _vae, _run_dir, last, c = idgan_run
    run_dir = str(tmp_path / 'resumed')
    os.makedirs(run_dir)
    resumed = tl.training_loop(**dict(c, run_dir=run_dir, total_kimg=0.020, kimg_per_tick=0.008, resume_pkl=last))
    with open(last, 'rb') as f:
        a = pickle.load(f)['latent']
    with open(resumed, 'rb') as f:
        b = pickle.load(f)['latent']
    assert torch.equal(a.bank_mu, b.bank_mu) and torch.equal(a.bank_logvar, b.bank_logvar)


def _train_cli(args):
    import train
    return CliRunner().invoke(train.main, args)


def test_cli_rejects_a_vae_of_another_resolution_or_channel_count(tmp_path):
    for res, channels, words in [(128, 1, '128x128'), (64, 3, '3 channel')]:
        vae = _write_vae_snapshot(tmp_path / f'vae{res}_{channels}.pkl', res=res, channels=channels)
        result = _train_cli([f'--outdir={tmp_path}/runs', '--data=dsprites', '--cfg=idgan', f'--vae={vae}', '--dry-run'])
        assert result.exit_code != 0
        assert 'Error: --vae:' in result.output and words in result.output, result.output
        assert 'Traceback' not in result.output


def test_cli_needs_vae_and_rejects_idgan_options_elsewhere(tmp_path):
    result = _train_cli([f'--outdir={tmp_path}/runs', '--data=dsprites', '--cfg=idgan', '--dry-run'])
    assert result.exit_code != 0 and '--cfg=idgan needs --vae' in result.output
    result = _train_cli([f'--outdir={tmp_path}/runs', '--data=dsprites', '--cfg=stylegan2', '--distill-weight=1',
                         '--dry-run'])
    assert result.exit_code != 0 and '--distill-weight does not apply to --cfg=stylegan2' in result.output


def test_cli_configures_sampler_mapping_and_term_from_the_vae(tmp_path):
    vae = _write_vae_snapshot(tmp_path / 'vae.pkl', res=64)
    result = _train_cli([f'--outdir={tmp_path}/runs', '--data=dsprites', '--cfg=idgan', f'--vae={vae}',
                         '--nuisance-dim=4', '--distill-weight=0.5', '--distill-warmup=2', '--dry-run'])
    assert result.exit_code == 0, result.output
    assert '"class_name": "disentangle.latents.PosteriorBankLatent"' in result.output
    assert f'"code_dim": {CODE_DIM}' in result.output and '"nuisance_dim": 4' in result.output
    assert '"class_name": "disentangle.latents.CodeMappingNetwork"' in result.output
    assert '"distill_weight": 0.5' in result.output and '"distill_warmup": 2.0' in result.output
    assert '"style_mixing_prob": 0' in result.output
    assert '"r1_gamma": 10.0' in result.output   # the ID-GAN references' R1 weight, not the auto rule's 0.0256
    result = _train_cli([f'--outdir={tmp_path}/runs', '--data=dsprites', '--cfg=idgan', f'--vae={vae}',
                         '--gamma=0.5', '--dry-run'])
    assert result.exit_code == 0 and '"r1_gamma": 0.5' in result.output, result.output


def test_configs_registry_collects_presets_from_plugin_modules():
    from disentangle import configs, idgan
    assert configs.CONFIGS['idgan'] is idgan.configure_idgan
    import train
    assert 'idgan' in train._gan_configs() and 'stylegan2' in train._gan_configs()


def test_encode_images_matches_the_encoder_and_resizes():
    encoder = tiny_encoder()
    images = torch.rand(3, 1, 2 * RES, 2 * RES) * 2 - 1
    mu, logvar = encode_images(encoder, images)
    ref_mu, ref_logvar = encoder(torch.nn.functional.avg_pool2d(images, 2))
    torch.testing.assert_close(mu, ref_mu)
    torch.testing.assert_close(logvar, ref_logvar)


def test_model_centrality_reads_an_idgan_snapshot_through_its_encoder(idgan_run):
    from disentangle.centrality import SnapshotModel, cross_scores, labelled_groups
    _vae, _run_dir, last, _c = idgan_run
    with open(last, 'rb') as f:
        snap = pickle.load(f)
    model = SnapshotModel(snap, name='idgan')
    assert (model.kind, model.num_codes) == ('gan', CODE_DIM)
    generator = torch.Generator().manual_seed(0)
    label, codes, rest = next(labelled_groups(model, 1, 5, generator))
    assert label == 0 and torch.equal(codes[:, 0], codes[:1, 0].expand(5))     # the group's code held fixed
    assert codes[:, 1].unique().numel() == 5 and rest.shape == (5, 2)           # the others and the nuisance vary
    images = model.render(codes, rest)
    assert images.shape == (5, 1, RES, RES) and images.dtype == torch.uint8
    with torch.no_grad():
        expected, _logvar = snap['E'](images.float() / 127.5 - 1)
    assert torch.allclose(torch.as_tensor(model.encode(images)).float(), expected, atol=1e-5)  # E's posterior mean
    copy = SnapshotModel(snap, name='copy')
    scores = cross_scores([model, copy], num_groups=8, group_size=4, std_samples=16, verbose=False)
    assert scores.shape == (2, 2) and np.allclose(scores, scores[0, 0])        # identical models score identically
