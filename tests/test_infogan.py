"""InfoGAN and InfoGAN-CR: the code sampler, the MI term, contrastive pairs and schedule, snapshots, presets."""

import math
import os
import pickle

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner
from fresh_process import run_python

import dnnlib
from disentangle.contrastive import (
    ContrastiveSchedule,
    ContrastiveTerm,
    contrastive_pairs,
    gapped_pair,
    parse_gap_schedule,
)
from disentangle.infogan import InfoTerm, categorical_nll, continuous_nll, parse_cat
from disentangle.infogan_latent import InfoGANLatent
from networks.stylegan2 import Discriminator, Generator
from training import training_loop as tl
from training.loss import StyleGAN2Loss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RES = 16


def tiny_G(sampler, seed=0):
    torch.manual_seed(seed)
    return Generator(z_dim=sampler.z_dim, c_dim=0, w_dim=16, img_resolution=RES, img_channels=1,
                     mapping_kwargs=dict(class_name='disentangle.latents.CodeMappingNetwork',
                                         code_dim=sampler.z_code_dim, num_layers=1),
                     synthesis_kwargs=dict(channel_base=128, channel_max=8))


def tiny_D(seed=1):
    torch.manual_seed(seed)
    return Discriminator(c_dim=0, img_resolution=RES, img_channels=1, channel_base=128, channel_max=8,
                         epilogue_kwargs=dict(mbstd_num_channels=0))


# ----------------------------------------------------------------------------------------------
# The sampler.

def test_sampler_layout_one_hot_ranges_and_code_convention():
    sampler = InfoGANLatent(cat_sizes=(10, 3), cont_dim=2, noise_dim=4)
    assert (sampler.code_dim, sampler.z_code_dim, sampler.z_dim) == (4, 15, 19)
    out = sampler.sample(5000, generator=torch.Generator().manual_seed(0))
    assert out.z.shape == (5000, 19) and out.code.shape == (5000, 4) and out.noise.shape == (5000, 4)
    onehot10, onehot3, cont, noise = out.z[:, :10], out.z[:, 10:13], out.z[:, 13:15], out.z[:, 15:]
    assert torch.equal(onehot10.sum(1), torch.ones(5000)) and torch.equal(onehot3.sum(1), torch.ones(5000))
    assert torch.equal(onehot10.argmax(1).float(), out.code[:, 0])      # category index as a float
    assert torch.equal(onehot3.argmax(1).float(), out.code[:, 1])
    assert torch.equal(cont, out.code[:, 2:]) and torch.equal(noise, out.noise)
    assert cont.min() >= -1 and cont.max() <= 1 and abs(float(cont.mean())) < 0.05
    assert float(cont.var()) == pytest.approx(1 / 3, abs=0.03)           # U(-1, 1)
    assert set(out.code[:, 0].tolist()) == set(float(k) for k in range(10))
    torch.testing.assert_close(sampler.assemble(out.code, out.noise).z, out.z)


def test_seeded_latents_are_reproducible_and_set_code_edits_one_column():
    sampler = InfoGANLatent(cat_sizes=(4,), cont_dim=2, noise_dim=3)
    a, b, c = sampler.sample_seed(5), sampler.sample_seed(5), sampler.sample_seed(6)
    assert torch.equal(a.z, b.z) and not torch.equal(a.z, c.z)
    z = sampler.set_code(a.z, 0, 2.0)
    assert z[0, :4].tolist() == [0, 0, 1, 0] and torch.equal(z[:, 4:], a.z[:, 4:])
    z = sampler.set_code(a.z, 2, -0.5)
    assert float(z[0, 5]) == -0.5 and torch.equal(z[:, :5], a.z[:, :5]) and torch.equal(z[:, 6:], a.z[:, 6:])
    with pytest.raises(ValueError, match='categories 0..3'):
        sampler.set_code(a.z, 0, 4.0)


@pytest.mark.parametrize('kwargs, words', [(dict(cat_sizes=(1,)), 'at least 2 categories'),
                                           (dict(cat_sizes=(), cont_dim=0), 'at least one')])
def test_sampler_rejects_bad_codes(kwargs, words):
    with pytest.raises(ValueError, match=words):
        InfoGANLatent(**kwargs)


def test_parse_cat():
    assert parse_cat('10') == (10,) and parse_cat('10, 3') == (10, 3) and parse_cat(None) == ()
    for bad in ('0', '10,x'):
        with pytest.raises(ValueError, match='--cat'):
            parse_cat(bad)


# ----------------------------------------------------------------------------------------------
# The MI term.

def test_nll_helpers_match_the_hand_computation():
    logits = [torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 0.0]])]
    categories = torch.tensor([[1, 0]])
    expected = -(0.0 - math.log(math.exp(2) + 1 + math.exp(-1))) + math.log(2)
    torch.testing.assert_close(categorical_nll(logits, categories), torch.tensor([expected]))
    values, mean = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.0, -0.5]])
    fixed = 2 * 0.5 * math.log(2 * math.pi) + 0.5 * 0.25 + 0.5 * 0.25
    torch.testing.assert_close(continuous_nll(values, mean), torch.tensor([fixed]))
    logstd = torch.tensor([[math.log(0.5), 0.0]])
    learned = (0.5 * math.log(2 * math.pi) + math.log(0.5) + 0.5 * 0.25 / 0.25) + (0.5 * math.log(2 * math.pi) + 0.125)
    torch.testing.assert_close(continuous_nll(values, mean, logstd), torch.tensor([learned]))


def _info_setup(learn_std=False, cat=(3,), cont=2):
    sampler = InfoGANLatent(cat_sizes=cat, cont_dim=cont, noise_dim=2)
    G, D = tiny_G(sampler).train().requires_grad_(False), tiny_D().train().requires_grad_(False)
    term = InfoTerm(G=G, D=D, latent_sampler=sampler, training_set=None, device='cpu', info_weight_cat=0.7,
                    info_weight_cont=0.2, learn_std=learn_std)
    loss = StyleGAN2Loss(device='cpu', G=G, D=D, latent_sampler=sampler, style_mixing_prob=0, r1_gamma=1,
                         pl_weight=0, extra_terms=[term])
    return sampler, G, D, term, loss


@pytest.mark.parametrize('learn_std', [False, True])
def test_term_equals_weighted_cross_entropy_plus_gaussian_nll(learn_std):
    sampler, G, D, term, loss = _info_setup(learn_std=learn_std)
    latents = sampler.sample(6, generator=torch.Generator().manual_seed(2))
    img = G(latents.z, torch.zeros(6, 0))
    ctx = dnnlib.EasyDict(gen_img=img, gen_c=torch.zeros(6, 0), latents=latents, D=D, loss=loss, gen_features=None)
    value = term.g_loss(ctx)
    _, features = D(img, torch.zeros(6, 0), return_features=True)
    y = term.head.out(term.head.fc(features))
    logits, mean = y[:, :3], y[:, 3:5]
    ce = -torch.log_softmax(logits, 1).gather(1, latents.code[:, :1].long())[:, 0]
    if learn_std:
        logstd = y[:, 5:7].clamp(-5, 2)
        nll = (0.5 * math.log(2 * math.pi) + logstd + (latents.code[:, 1:] - mean) ** 2 / (2 * torch.exp(2 * logstd))).sum(1)
    else:
        nll = (0.5 * math.log(2 * math.pi) + 0.5 * (latents.code[:, 1:] - mean) ** 2).sum(1)
    torch.testing.assert_close(value, 0.7 * ce + 0.2 * nll)


def test_term_gradients_reach_G_in_its_phase_and_Q_with_D_trunk_in_Ds():
    sampler, G, D, term, loss = _info_setup()
    latents = sampler.sample(4)
    real = torch.zeros(4, 1, RES, RES)
    G.requires_grad_(True)
    loss.accumulate_gradients('Gmain', real, torch.zeros(4, 0), latents, torch.zeros(4, 0), gain=1, cur_nimg=0)
    G.requires_grad_(False)
    assert G.mapping.net.fc0.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in term.head.parameters()) and all(p.grad is None for p in D.parameters())
    # The MI term alone moves G: without it, the G gradient differs.
    with_term = G.mapping.net.fc0.weight.grad.clone()
    G.zero_grad(set_to_none=True)
    plain = StyleGAN2Loss(device='cpu', G=G, D=D, latent_sampler=sampler, style_mixing_prob=0, pl_weight=0)
    G.requires_grad_(True)
    plain.accumulate_gradients('Gmain', real, torch.zeros(4, 0), latents, torch.zeros(4, 0), gain=1, cur_nimg=0)
    G.requires_grad_(False)
    assert (G.mapping.net.fc0.weight.grad - with_term).abs().max() > 1e-6
    D.requires_grad_(True)
    loss.accumulate_gradients('Dmain', real, torch.zeros(4, 0), latents, torch.zeros(4, 0), gain=1, cur_nimg=0)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in term.head.parameters())
    assert D.b16.conv0.weight.grad.abs().sum() > 0
    assert term.extra_parameters('D') == list(term.head.parameters()) and term.extra_parameters('G') == []


def test_q_learns_the_codes_of_a_fixed_generator():
    # Q (head + D trunk) trained alone on the term must recover the categorical code of G's images.
    sampler, G, D, term, loss = _info_setup(cat=(3,), cont=1)
    params = list(D.parameters()) + list(term.head.parameters())
    D.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=0.01)
    gen = torch.Generator().manual_seed(0)
    probe = sampler.sample(200, generator=torch.Generator().manual_seed(9))

    def accuracy():
        with torch.no_grad():
            return float((term.Q(G(probe.z, torch.zeros(200, 0)))[:, 0] == probe.code[:, 0]).float().mean())
    before = accuracy()
    for _ in range(60):
        latents = sampler.sample(16, generator=gen)
        with torch.no_grad():
            img = G(latents.z, torch.zeros(16, 0))
        ctx = dnnlib.EasyDict(gen_img=img, gen_c=torch.zeros(16, 0), latents=latents, D=D, loss=loss, gen_features=None)
        opt.zero_grad(set_to_none=True)
        term.d_loss(ctx).mean().backward()
        opt.step()
    after = accuracy()
    assert after > 0.8 and after > before + 0.3, (before, after)   # chance is 1/3


# ----------------------------------------------------------------------------------------------
# InfoGAN-CR pairs and schedule.

def test_pairs_share_exactly_the_chosen_code_and_the_noise():
    sampler = InfoGANLatent(cat_sizes=(5,), cont_dim=4, noise_dim=3)
    a, b, shared = contrastive_pairs(sampler, 2000, generator=torch.Generator().manual_seed(0))
    cont_a, cont_b = sampler.continuous(a.code), sampler.continuous(b.code)
    rows = torch.arange(2000)
    assert torch.equal(cont_a[rows, shared], cont_b[rows, shared])
    others = ~torch.nn.functional.one_hot(shared, 4).bool()
    assert (cont_a[others] != cont_b[others]).all()
    assert torch.equal(a.noise, b.noise)
    assert set(shared.tolist()) == {0, 1, 2, 3}
    assert float((a.code[:, 0] != b.code[:, 0]).float().mean()) > 0.7     # categories resampled
    torch.testing.assert_close(a.z, sampler.assemble(a.code, a.noise).z)


def test_gap_keeps_the_other_codes_apart_and_inside_the_range():
    sampler = InfoGANLatent(cont_dim=5, noise_dim=2)
    a, b, shared = contrastive_pairs(sampler, 3000, gap=1.2, generator=torch.Generator().manual_seed(1))
    diff = (sampler.continuous(a.code) - sampler.continuous(b.code)).abs()
    others = ~torch.nn.functional.one_hot(shared, 5).bool()
    assert diff[others].min() >= 1.2 - 1e-6 and torch.equal(diff[~others], torch.zeros(3000))
    assert a.code.abs().max() <= 1 and b.code.abs().max() <= 1
    u, v = gapped_pair([10000], 1.9, generator=torch.Generator().manual_seed(2))
    assert ((u - v).abs() >= 1.9 - 1e-6).all() and u.abs().max() <= 1 and (u > v).float().mean() == pytest.approx(0.5, abs=0.03)


def test_gap_schedule_parsing_and_stages():
    assert parse_gap_schedule('1.9,0@85') == [(0.0, 1.9), (85.0, 0.0)]
    for bad in ('2.5', '1,1.5@3', '1@3', '1,0', 'x'):
        with pytest.raises(ValueError, match='--cr-gap'):
            parse_gap_schedule(bad)
    schedule = ContrastiveSchedule(2.0, 10, parse_gap_schedule('1.5,0@20'))
    assert [schedule.alpha(n) for n in (0, 9999, 10000)] == [0.0, 0.0, 2.0]
    assert [schedule.gap(n) for n in (0, 19999, 20000)] == [1.5, 1.5, 0.0]
    assert [schedule.stage(n) for n in (0, 10000, 15000, 20000, 90000)] == [0, 1, 1, 2, 2]


def _cr_term(start_kimg=0.004, gap='0'):
    sampler = InfoGANLatent(cont_dim=3, noise_dim=2)
    G, D = tiny_G(sampler).train().requires_grad_(False), tiny_D().train().requires_grad_(False)
    term = ContrastiveTerm(G=G, D=D, latent_sampler=sampler, training_set=None, device='cpu', cr_weight=2.0,
                           cr_start_kimg=start_kimg, cr_gap=gap)
    loss = StyleGAN2Loss(device='cpu', G=G, D=D, latent_sampler=sampler, style_mixing_prob=0, pl_weight=0)
    return sampler, G, term, loss


def _g_ctx(sampler, G, loss, cur_nimg, n=4):
    latents = sampler.sample(n)
    return dnnlib.EasyDict(gen_img=G(latents.z, torch.zeros(n, 0)), gen_c=torch.zeros(n, 0), latents=latents,
                           cur_nimg=cur_nimg, loss=loss)


def test_H_is_reinitialised_when_the_schedule_changes_and_trains_in_between():
    torch.manual_seed(0)
    sampler, G, term, loss = _cr_term(start_kimg=4, gap='1.0,0.5@8')
    assert term.g_loss(_g_ctx(sampler, G, loss, 0)) is None          # alpha 0: no pairs, H untouched
    assert term.num_reinits == 0 and len(term.opt.state) == 0
    G.requires_grad_(True)
    value = term.g_loss(_g_ctx(sampler, G, loss, 4000))              # alpha switches on: fresh H, one H step
    assert term.num_reinits == 1 and value.shape == (4,) and len(term.opt.state) > 0
    value.mean().backward()
    assert G.mapping.net.fc0.weight.grad.abs().sum() > 0             # G learns through H
    assert all(p.grad is None for p in term.H.parameters())          # G's pass does not train H
    trained = {k: v.clone() for k, v in term.H.state_dict().items()}
    state = term.state_dict()
    term.g_loss(_g_ctx(sampler, G, loss, 6000))                     # same stage: H keeps training
    assert term.num_reinits == 1
    assert any(not torch.equal(trained[k], v) for k, v in term.H.state_dict().items())
    term.g_loss(_g_ctx(sampler, G, loss, 8000))                     # the gap shrinks: re-initialised again
    assert term.num_reinits == 2
    # Exact resume restores stage and optimiser moments: no spurious re-initialisation.
    _s, _G, other, _l = _cr_term(start_kimg=4, gap='1.0,0.5@8')
    other.load_state_dict(state)
    assert other.stage == 1 and len(other.opt.state) == len(state['opt']['state'])
    other.g_loss(_g_ctx(sampler, G, loss, 6000))
    assert other.num_reinits == 1


def test_reinitialise_gives_fresh_weights_in_place_and_an_empty_optimiser():
    sampler, G, term, loss = _cr_term(start_kimg=0)
    term.g_loss(_g_ctx(sampler, G, loss, 0))
    assert len(term.opt.state) > 0
    H = term.H
    torch.manual_seed(5)
    term.reinitialize()
    torch.manual_seed(5)
    from disentangle.info_heads import ContrastiveClassifier
    fresh = ContrastiveClassifier(**term.h_kwargs)
    assert term.H is H                                             # the snapshot's reference stays valid
    for key, value in fresh.state_dict().items():
        assert torch.equal(H.state_dict()[key], value), key
    assert len(term.opt.state) == 0 and term.opt.param_groups[0]['params'][0] is next(H.parameters())


# ----------------------------------------------------------------------------------------------
# Training runs, snapshots, train.py.

def _write_squares(path, count=24):
    os.makedirs(path)
    rnd = np.random.RandomState(0)
    for i, (y, x) in enumerate(rnd.randint(0, RES - 4, size=[count, 2])):
        image = np.zeros([RES, RES], dtype=np.uint8)
        image[y:y + 4, x:x + 4] = 255
        PIL.Image.fromarray(image, 'L').save(os.path.join(path, f'{i:03d}.png'))
    return str(path)


def _loop_config(root, cfg_terms, sampler_kwargs):
    sampler = InfoGANLatent(**sampler_kwargs)
    return dnnlib.EasyDict(
        run_dir=str(root / 'run'),
        training_set_kwargs=dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset',
                                            path=_write_squares(root / 'squares')),
        data_loader_kwargs=dnnlib.EasyDict(num_workers=0),
        G_kwargs=dnnlib.EasyDict(class_name='networks.stylegan2.Generator', z_dim=0, w_dim=16,
                                 mapping_kwargs=dnnlib.EasyDict(class_name='disentangle.latents.CodeMappingNetwork',
                                                                code_dim=sampler.z_code_dim, num_layers=1),
                                 synthesis_kwargs=dnnlib.EasyDict(channel_base=128, channel_max=8)),
        D_kwargs=dnnlib.EasyDict(class_name='networks.stylegan2.Discriminator', channel_base=128, channel_max=8,
                                 epilogue_kwargs=dnnlib.EasyDict(mbstd_num_channels=0)),
        G_opt_kwargs=dnnlib.EasyDict(class_name='torch.optim.Adam', lr=0.0025, betas=[0.0, 0.99], eps=1e-8),
        D_opt_kwargs=dnnlib.EasyDict(class_name='torch.optim.Adam', lr=0.0025, betas=[0.0, 0.99], eps=1e-8),
        loss_kwargs=dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1.0, style_mixing_prob=0),
        latent_kwargs=dnnlib.EasyDict(class_name='disentangle.infogan_latent.InfoGANLatent', **sampler_kwargs),
        extra_terms_kwargs=cfg_terms, G_reg_interval=2, D_reg_interval=2, batch_size=4, batch_gpu=4,
        ema_kimg=0.01, ema_rampup=0.05, total_kimg=0.012, kimg_per_tick=0.004, image_snapshot_ticks=100,
        network_snapshot_ticks=3, random_seed=0, precision='fp32', device='cpu')


@pytest.fixture(scope='module')
def cr_run(tmp_path_factory):
    """Three InfoGAN-CR ticks (alpha on from the second) through the real loop."""
    root = tmp_path_factory.mktemp('infogan_cr')
    terms = [dnnlib.EasyDict(class_name='disentangle.infogan.InfoTerm', info_weight_cat=1.0, info_weight_cont=0.05),
             dnnlib.EasyDict(class_name='disentangle.contrastive.ContrastiveTerm', cr_weight=2.0,
                             cr_start_kimg=0.004, cr_gap='0.5')]
    c = _loop_config(root, terms, dict(cat_sizes=[3], cont_dim=2, noise_dim=2))
    os.makedirs(c.run_dir)
    last = tl.training_loop(**c)
    return c, last


def test_training_logs_both_terms_and_snapshots_carry_Q_and_H(cr_run):
    import json
    c, last = cr_run
    with open(os.path.join(c.run_dir, 'stats.jsonl')) as f:
        stats = [json.loads(line) for line in f]
    for key in ('Loss/Info/cat', 'Info/cont_mse', 'Loss/CR/H', 'CR/H_accuracy', 'Loss/CR/G'):
        assert key in stats[-1], key
    with open(last, 'rb') as f:
        snap = pickle.load(f)
    assert snap['Q'].code_dim == 3 and snap['H'].num_codes == 2 and snap['latent'].layout()['kind'] == 'infogan'
    assert snap['resume_state']['loss']['terms'][1]['stage'] == 1


def test_exact_resume_restores_H_and_its_optimiser(cr_run, tmp_path):
    c, last = cr_run
    run_dir = str(tmp_path / 'resumed')
    os.makedirs(run_dir)
    resumed = tl.training_loop(**dict(c, run_dir=run_dir, total_kimg=0.016, resume_pkl=last))
    with open(last, 'rb') as f:
        before = pickle.load(f)
    with open(resumed, 'rb') as f:
        after = pickle.load(f)
    term_before, term_after = before['resume_state']['loss']['terms'][1], after['resume_state']['loss']['terms'][1]
    assert term_after['num_reinits'] == term_before['num_reinits']      # no re-initialisation on resume
    steps_before = next(iter(term_before['opt']['state'].values()))['step']
    steps_after = next(iter(term_after['opt']['state'].values()))['step']
    assert float(steps_after) == float(steps_before) + 1                # one more G step, same Adam moments


def test_snapshot_round_trips_in_a_fresh_process_and_Q_is_a_representation(cr_run, tmp_path):
    _c, last = cr_run
    script = (
        'import pickle, sys, torch\n'
        'sys.modules["disentangle"] = None\n'
        f'snap = pickle.load(open({last!r}, "rb"))\n'
        'lat = snap["latent"].sample_seed(3)\n'
        'img = snap["G_ema"](lat.z, torch.zeros(1, 0), noise_mode="const")\n'
        'codes = snap["Q"](img)\n'
        'pair = snap["H"](torch.cat([img, img], 1))\n'
        'print(tuple(codes.shape), tuple(pair.shape), float(codes[0, 0]) in (0.0, 1.0, 2.0))\n')
    out = run_python(script, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['(1,', '3)', '(1,', '2)', 'True']
    from metrics.representation import representation_from_snapshot
    with open(last, 'rb') as f:
        snap = pickle.load(f)
    rep = representation_from_snapshot(snap)
    codes = rep(np.zeros([5, 1, 32, 32], dtype=np.uint8))              # resized to Q's 16x16
    assert codes.shape == (5, 3) and codes.dtype == np.float64


def test_infogan_loop_runs_without_the_contrastive_term(tmp_path):
    terms = [dnnlib.EasyDict(class_name='disentangle.infogan.InfoTerm', learn_std=True)]
    c = _loop_config(tmp_path, terms, dict(cat_sizes=[], cont_dim=2, noise_dim=0))
    os.makedirs(c.run_dir)
    last = tl.training_loop(**dict(c, total_kimg=0.008))
    with open(last, 'rb') as f:
        snap = pickle.load(f)
    assert 'H' not in snap and snap['Q'].code_dim == 2 and snap['Q'].head.learn_std


def _train_cli(args):
    import train
    return CliRunner().invoke(train.main, args)


@pytest.mark.parametrize('args, words', [
    (['--cfg=infogan', '--cat=0'], '--cat=0: a categorical code needs at least 2'),
    (['--cfg=infogan', '--cr-weight=1'], '--cr-weight does not apply to --cfg=infogan'),
    (['--cfg=infogan-cr', '--cont=1'], 'needs at least 2 continuous codes'),
    (['--cfg=infogan-cr', '--cr-gap=3'], 'a gap must lie in [0, 2)'),
    (['--cfg=infogan', '--cont=0'], '--cont=0 without --cat'),
    (['--cfg=infogan', '--info-weight-cat=1'], '--info-weight-cat needs a categorical code'),
    (['--cfg=stylegan2', '--cat=10'], '--cat does not apply to --cfg=stylegan2'),
])
def test_cli_rejects_bad_options_with_one_sentence(tmp_path, args, words):
    result = _train_cli([f'--outdir={tmp_path}/runs', '--data=dsprites', '--dry-run'] + args)
    assert result.exit_code != 0 and words in result.output, result.output
    assert 'Traceback' not in result.output


def test_cli_presets_configure_codes_mapping_and_terms(tmp_path, capsys):
    import json
    result = _train_cli([f'--outdir={tmp_path}/runs', '--data=dsprites', '--cfg=infogan-cr', '--kimg=100', '--dry-run'])
    assert result.exit_code == 0, result.output
    options = json.loads(result.output.split('Training options:')[1].split('Output directory')[0])
    assert options['latent_kwargs'] == dict(class_name='disentangle.infogan_latent.InfoGANLatent', cat_sizes=[],
                                            cont_dim=5, noise_dim=5)
    assert options['G_kwargs']['mapping_kwargs']['code_dim'] == 5
    assert options['D_kwargs']['epilogue_kwargs']['mbstd_num_channels'] == 0
    info, cr = options['extra_terms_kwargs']
    assert info['info_weight_cont'] == 0.05 and info['info_weight_cat'] == 1.0
    assert cr['cr_start_kimg'] == 90.0 and cr['cr_weight'] == 2.0 and cr['cr_gap'] == '0'


# ----------------------------------------------------------------------------------------------
# Traversals.

def test_categorical_traversal_has_one_column_per_category(cr_run, tmp_path):
    from disentangle.traverse import LABEL_WIDTH, write_traversal
    from training.snapshot import load_generator
    _c, last = cr_run
    G, sampler, _data = load_generator(last)
    latent = sampler.sample_seed(0)
    out = write_traversal(G, sampler, latent, str(tmp_path), 'trav', dims=[0, 1, 2], steps=5)
    assert out.lengths == [3, 5, 5]                          # 3 categories, 5 steps per continuous code
    image = PIL.Image.open(out.paths[0])
    assert image.size == (LABEL_WIDTH + 5 * RES, 3 * RES)
    assert out.images.shape == (15, 1, RES, RES) and out.images[3:5].sum() == 0   # padded tiles are black
    # Column k of the categorical row renders category k with the seed's other codes and noise.
    for k in range(3):
        z = sampler.set_code(latent.z, 0, float(k))
        img = G(z, torch.zeros(1, 0), noise_mode='const')
        expected = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)
        assert torch.equal(out.images[k], expected[0])
    assert out.ranges[1].tolist() == [-1.0, 1.0]


# ----------------------------------------------------------------------------------------------
# ModelCentrality.

class _CodeModel:
    """A 'model' whose 'images' are linear maps of its codes, read back by another linear map."""

    def __init__(self, num_codes, render_matrix, encode_matrix, name):
        self.num_codes, self.name = num_codes, name
        self.render_matrix = torch.as_tensor(render_matrix, dtype=torch.float64)
        self.encode_matrix = torch.as_tensor(encode_matrix, dtype=torch.float64)

    def sample(self, n, generator):
        return torch.rand([n, self.num_codes], generator=generator, dtype=torch.float64) * 2 - 1, None

    def render(self, codes, rest):
        return codes @ self.render_matrix

    def encode(self, images):
        return (images @ self.encode_matrix).numpy()


def test_centrality_of_a_planted_similarity_matrix_picks_the_medoid():
    from disentangle.centrality import centrality, ranking
    scores = np.array([[1.0, 0.9, 0.8, 0.2],
                       [0.7, 1.0, 0.9, 0.3],
                       [0.8, 0.9, 1.0, 0.3],
                       [0.2, 0.3, 0.1, 1.0]])
    symmetric, values = centrality(scores)
    assert np.allclose(symmetric, symmetric.T) and symmetric[0, 1] == pytest.approx(0.8)
    # mean similarity to the others: a 0.600, b 0.667, c 0.633, d 0.233 -- b is the unique medoid
    assert values == pytest.approx([1.8 / 3, 2.0 / 3, 1.9 / 3, 0.7 / 3])
    assert [name for _r, name, _v in ranking(['a', 'b', 'c', 'd'], scores)] == ['b', 'c', 'a', 'd']


def test_centrality_ties_keep_the_input_order():
    from disentangle.centrality import ranking
    scores = np.array([[1.0, 0.5, 0.5], [0.5, 1.0, 0.9], [0.5, 0.9, 1.0]])   # b and c tie at 0.7
    assert [name for _r, name, _v in ranking(['a', 'c', 'b'], scores)] == ['c', 'b', 'a']


def test_identical_models_agree_and_an_entangled_one_ranks_last():
    from disentangle.centrality import cross_scores, ranking
    rotation = np.linalg.qr(np.random.RandomState(0).randn(3, 3))[0]
    eye = np.eye(3)
    # 'mixed' renders a rotation of its codes: its data entangles them, for every encoder.
    models = [_CodeModel(3, eye, eye, 'a'), _CodeModel(3, eye, eye[[2, 0, 1]], 'b'),
              _CodeModel(3, rotation, eye, 'mixed')]
    scores = cross_scores(models, num_groups=60, group_size=20, std_samples=200, verbose=False)
    assert scores[0, 1] == scores[1, 0] == 1.0 and scores[0, 0] == 1.0     # a permutation is as disentangled
    assert scores[0, 2] < 0.9 and scores[1, 2] < 0.9 and scores[2, 0] == 1.0
    assert [name for _r, name, _v in ranking(['a', 'b', 'mixed'], scores)][-1] == 'mixed'


def test_select_model_on_two_copies_gives_a_symmetric_matrix_and_equal_scores(cr_run, tmp_path):
    import json
    import shutil

    import select_model
    _c, last = cr_run
    copies = []
    for name in ('a', 'b'):
        copies.append(str(tmp_path / f'{name}.pkl'))
        shutil.copy(last, copies[-1])
    out = str(tmp_path / 'mc.json')
    result = CliRunner().invoke(select_model.main, [f'--networks={tmp_path}/*.pkl', '--groups=12', '--group-size=4',
                                                    '--std-samples=32', f'--out={out}', '--quiet'])
    assert result.exit_code == 0, result.output
    with open(out) as f:
        data = json.load(f)
    scores = np.array(data['scores'])
    assert data['networks'] == copies and np.array_equal(scores, scores.T) and np.all(scores == scores[0, 0])
    assert data['centrality'][0] == data['centrality'][1] and 'selected:' in result.output
    bad = CliRunner().invoke(select_model.main, [f'--networks={copies[0]}', f'--out={out}'])
    assert bad.exit_code != 0 and 'compares at least 2' in bad.output


def test_centrality_scores_a_vae_snapshot_against_an_infogan_snapshot(cr_run):
    from disentangle.centrality import SnapshotModel, cross_scores
    from networks.vae import Decoder, Encoder
    _c, last = cr_run
    torch.manual_seed(0)
    vae = SnapshotModel(dict(E=Encoder(img_resolution=RES, img_channels=1, code_dim=4),
                             Dec=Decoder(img_resolution=RES, img_channels=1, code_dim=4)), name='vae')
    with open(last, 'rb') as f:
        gan = SnapshotModel(pickle.load(f), name='gan')
    assert (vae.kind, vae.num_codes, gan.kind, gan.num_codes) == ('vae', 4, 'gan', 3)
    codes, rest = vae.sample(5, torch.Generator().manual_seed(0))
    images = vae.render(codes, rest)
    assert images.shape == (5, 1, RES, RES) and images.dtype == torch.uint8
    assert vae.encode(images).shape == (5, 4) and gan.encode(images).shape == (5, 3)
    scores = cross_scores([vae, gan], num_groups=8, group_size=4, std_samples=16, verbose=False)
    assert scores.shape == (2, 2) and ((scores >= 0) & (scores <= 1)).all()
