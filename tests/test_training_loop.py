"""The GAN training loop and loss: exact resume, EMA, D learning, bf16, divergence guard, snapshots."""

import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import dnnlib
from training import training_loop as tl
from training.loss import LossTerm, StyleGAN2Loss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(run_dir, total_kimg, **overrides):
    """A 32x32 StyleGAN2 small enough to train a few steps per second on one core."""
    c = dnnlib.EasyDict(
        run_dir=str(run_dir),
        training_set_kwargs=dnnlib.EasyDict(class_name='training.dataset.BuiltinDataset', path='digits',
                                            max_size=64, use_labels=False, xflip=False, random_seed=0),
        data_loader_kwargs=dnnlib.EasyDict(num_workers=0),
        G_kwargs=dnnlib.EasyDict(class_name='networks.stylegan2.Generator', z_dim=16, w_dim=16,
                                 mapping_kwargs=dnnlib.EasyDict(num_layers=1),
                                 synthesis_kwargs=dnnlib.EasyDict(channel_base=256, channel_max=16)),
        D_kwargs=dnnlib.EasyDict(class_name='networks.stylegan2.Discriminator', channel_base=256, channel_max=16,
                                 epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=2)),
        G_opt_kwargs=dnnlib.EasyDict(class_name='torch.optim.Adam', lr=0.0025, betas=[0.0, 0.99], eps=1e-8),
        D_opt_kwargs=dnnlib.EasyDict(class_name='torch.optim.Adam', lr=0.0025, betas=[0.0, 0.99], eps=1e-8),
        augment_kwargs=dnnlib.EasyDict(class_name='training.augment.AugmentPipe', xflip=1, rotate90=1, xint=1,
                                       brightness=1, contrast=1),
        ada_target=0.6, ada_interval=1, ada_kimg=0.1,  # p moves 0.04 per step: visible in a few steps
        loss_kwargs=dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1.0),
        G_reg_interval=2, D_reg_interval=2,
        batch_size=4, batch_gpu=2, ema_kimg=0.01, ema_rampup=0.05,
        total_kimg=total_kimg, kimg_per_tick=0.008, image_snapshot_ticks=100, network_snapshot_ticks=1,
        random_seed=3, precision='fp32', device='cpu',
    )
    c.update(overrides)
    os.makedirs(run_dir, exist_ok=True)
    return c


def load(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


def final_snapshot(run_dir):
    return load(tl.list_snapshots(str(run_dir))[-1])


def assert_same_modules(a, b):
    for (name, x), (_, y) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(x, y), name
    for (name, x), (_, y) in zip(a.named_buffers(), b.named_buffers()):
        assert torch.equal(x, y), name




def test_resume_continues_the_same_curve_exactly(tmp_path):
    # 6 steps straight vs 3 steps, stop (as if killed right after the snapshot), resume, 3 steps.
    straight = tl.training_loop(**tiny_config(tmp_path / 'straight', total_kimg=0.024))
    first = tl.training_loop(**tiny_config(tmp_path / 'first', total_kimg=0.012))
    resumed = tl.training_loop(**tiny_config(tmp_path / 'resumed', total_kimg=0.024, resume_pkl=first))

    a, b, half = load(straight), load(resumed), load(first)
    assert half['resume_state']['cur_nimg'] == 12
    assert a['resume_state']['cur_nimg'] == b['resume_state']['cur_nimg'] == 24
    assert a['resume_state']['batch_idx'] == b['resume_state']['batch_idx'] == 6
    for name in ('G', 'D', 'G_ema', 'augment_pipe'):
        assert_same_modules(a[name], b[name])
    # Augmentation probability moved during the run (ADA is on) and matches exactly at the end.
    import json
    with open(tmp_path / 'straight' / 'stats.jsonl') as f:
        assert max(json.loads(line)['Progress/augment']['mean'] for line in f) > 0
    assert float(a['augment_pipe'].p) == float(b['augment_pipe'].p)
    assert a['resume_state']['ada'] == b['resume_state']['ada']
    # Adam moments match exactly.
    for key in ('G', 'D'):
        sa = a['resume_state']['optimizers'][key]['state']
        sb = b['resume_state']['optimizers'][key]['state']
        assert sa.keys() == sb.keys() and len(sa) > 0
        for k in sa:
            assert torch.equal(sa[k]['exp_avg'], sb[k]['exp_avg'])
            assert torch.equal(sa[k]['exp_avg_sq'], sb[k]['exp_avg_sq'])
    assert torch.equal(a['resume_state']['loss']['pl_mean'], b['resume_state']['loss']['pl_mean'])
    assert float(a['resume_state']['loss']['pl_mean']) > 0
    # The resumed half really trained: weights moved away from the half-way snapshot.
    assert not torch.equal(next(half['G'].parameters()), next(b['G'].parameters()))


def test_snapshot_has_official_keys_and_loads_with_only_dnnlib_and_torch_utils(tmp_path):
    snapshot = tl.training_loop(**tiny_config(tmp_path / 'run', total_kimg=0.004))
    data = load(snapshot)
    for key in ('G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs', 'latent', 'resume_state'):
        assert key in data
    G = data['G_ema']
    z = torch.from_numpy(np.random.RandomState(0).randn(2, G.z_dim).astype(np.float32))
    expected = G(z, torch.zeros([2, 0]), noise_mode='const').numpy()

    # A directory with nothing but the two utility packages: the networks' code comes from the pickle.
    isolated = tmp_path / 'isolated'
    for package in ('dnnlib', 'torch_utils'):
        shutil.copytree(os.path.join(REPO, package), isolated / package,
                        ignore=shutil.ignore_patterns('__pycache__'))
    np.save(tmp_path / 'z.npy', z.numpy())
    script = (
        'import sys, pickle, numpy as np, torch\n'
        f'sys.path = [{str(isolated)!r}] + [p for p in sys.path if p not in ("", {REPO!r})]\n'
        'class NoTrainingCode:\n'  # the project may be pip-installed: forbid its training code outright
        '    def find_spec(self, name, path=None, target=None):\n'
        '        if name.split(".")[0] in ("networks", "training"):\n'
        '            raise ImportError(name)\n'
        'sys.meta_path.insert(0, NoTrainingCode())\n'
        f'data = pickle.load(open({snapshot!r}, "rb"))\n'
        'assert "networks" not in sys.modules and "training" not in sys.modules\n'
        'G = data["G_ema"]\n'
        f'z = torch.from_numpy(np.load({str(tmp_path / "z.npy")!r}))\n'
        f'np.save({str(tmp_path / "out.npy")!r}, G(z, torch.zeros([2, 0]), noise_mode="const").numpy())\n'
    )
    env = dict(os.environ, PYTHONPATH='')
    subprocess.run([sys.executable, '-c', script], check=True, cwd=str(tmp_path), env=env)
    # Not bit-exact: the subprocess may use another number of threads (reduction order).
    np.testing.assert_allclose(np.load(tmp_path / 'out.npy'), expected, rtol=1e-5, atol=1e-6)


def test_ema_beta_follows_half_life_and_ramp_up():
    # Half-life: after ema_kimg*1000 images the old weights keep exactly half their weight.
    beta = tl.ema_beta(batch_size=32, ema_kimg=10, ema_rampup=None, cur_nimg=10**6)
    assert beta ** (10_000 / 32) == pytest.approx(0.5, rel=1e-9)
    # Ramp-up shortens the half-life to cur_nimg * rampup early on.
    early = tl.ema_beta(batch_size=32, ema_kimg=10, ema_rampup=0.05, cur_nimg=1000)
    assert early == pytest.approx(0.5 ** (32 / 50))
    assert tl.ema_beta(batch_size=32, ema_kimg=10, ema_rampup=0.05, cur_nimg=0) == 0.0


def test_update_ema_interpolates_parameters_and_copies_buffers():
    G = torch.nn.BatchNorm1d(3)
    G_ema = torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        G.weight.fill_(1.0)
        G_ema.weight.fill_(3.0)
        G.running_mean.fill_(7.0)
    tl.update_ema(G_ema, G, beta=0.25)
    assert torch.allclose(G_ema.weight, torch.full([3], 0.25 * 3.0 + 0.75 * 1.0))
    assert torch.equal(G_ema.running_mean, G.running_mean)


def _tiny_networks(seed=0):
    from networks.stylegan2 import Discriminator, Generator
    torch.manual_seed(seed)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=1,
                  mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=128, channel_max=8))
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=1, channel_base=128, channel_max=8,
                      epilogue_kwargs=dict(mbstd_group_size=4))
    return G, D


def test_d_phase_learns_to_separate_reals_from_fakes():
    from training.latent import GaussianLatent
    G, D = _tiny_networks()
    sampler = GaussianLatent(z_dim=G.z_dim)
    loss = StyleGAN2Loss(device='cpu', G=G, D=D, latent_sampler=sampler, r1_gamma=0, style_mixing_prob=0)
    opt = torch.optim.Adam(D.parameters(), lr=0.01, betas=(0.0, 0.99))
    real = torch.ones([8, 1, 16, 16]) * 0.9  # bright squares; G's initial output is near zero
    c = torch.zeros([8, 0])

    def error():
        with torch.no_grad():
            fake_img, _ = loss.run_G(sampler.sample(8), c, update_emas=False)
            return float((D(real, c) <= 0).float().mean() + (D(fake_img, c) >= 0).float().mean()) / 2, \
                float(torch.nn.functional.softplus(-D(real, c)).mean() + torch.nn.functional.softplus(D(fake_img, c)).mean())

    _, loss_before = error()
    for _ in range(30):
        opt.zero_grad(set_to_none=True)
        D.requires_grad_(True)
        loss.accumulate_gradients('Dmain', real, c, sampler.sample(8), c, gain=1, cur_nimg=0)
        D.requires_grad_(False)
        opt.step()
    err_after, loss_after = error()
    assert loss_after < loss_before * 0.5
    assert err_after == 0.0


def test_bf16_training_stays_finite_and_close_to_fp32(tmp_path):
    fp32 = load(tl.training_loop(**tiny_config(tmp_path / 'fp32', total_kimg=0.012, augment_kwargs=None)))
    bf16 = load(tl.training_loop(**tiny_config(tmp_path / 'bf16', total_kimg=0.012, augment_kwargs=None,
                                               precision='bf16')))
    init = load(tl.training_loop(**tiny_config(tmp_path / 'init', total_kimg=0.004, augment_kwargs=None,
                                               G_opt_kwargs=dnnlib.EasyDict(class_name='torch.optim.Adam', lr=1e-12, betas=[0.0, 0.99], eps=1e-8),
                                               D_opt_kwargs=dnnlib.EasyDict(class_name='torch.optim.Adam', lr=1e-12, betas=[0.0, 0.99], eps=1e-8))))
    for name in ('G', 'D'):
        p32 = torch.cat([p.flatten() for p in fp32[name].parameters()])
        p16 = torch.cat([p.flatten() for p in bf16[name].parameters()])
        p0 = torch.cat([p.flatten() for p in init[name].parameters()])
        assert torch.isfinite(p16).all()
        # Both runs moved the weights by similar updates: the bf16-vs-fp32 difference is a small
        # fraction of the distance either travelled from the common initialisation.
        moved = (p32 - p0).norm()
        assert moved > 0
        assert (p16 - p32).norm() < 0.5 * moved, name


class NaNTerm(LossTerm):
    """A plug-in loss term that poisons G's loss after the first training step."""

    def __init__(self, **_kwargs):
        pass

    def g_loss(self, ctx):
        return ctx.gen_logits.flatten() * (float('nan') if ctx.cur_nimg > 0 else 0.0)


def test_divergence_stops_with_a_clear_message_and_keeps_the_last_good_snapshot(tmp_path):
    c = tiny_config(tmp_path / 'run', total_kimg=0.05, extra_terms_kwargs=[dict(class_name=f'{__name__}.NaNTerm')])
    with pytest.raises(tl.TrainingDiverged, match='Loss/G/total is NaN/Inf'):
        tl.training_loop(**c)
    snaps = tl.list_snapshots(str(tmp_path / 'run'))
    assert len(snaps) == 1  # tick 0 (before the NaN) only
    data = load(snaps[0])
    assert all(torch.isfinite(p).all() for p in data['G'].parameters())


@pytest.mark.parametrize('allow_tf32', [False, True])
def test_the_loop_sets_tf32_explicitly_both_ways(allow_tf32, tmp_path):
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not allow_tf32
        tl.training_loop(**tiny_config(tmp_path / 'run', total_kimg=0.004, allow_tf32=allow_tf32))
        assert torch.backends.cuda.matmul.allow_tf32 is allow_tf32
        assert torch.backends.cudnn.allow_tf32 is allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
