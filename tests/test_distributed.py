"""Data-parallel training: 2 gloo processes on CPU train exactly what 1 process trains on the same global batch."""

import json
import os
import pickle
import subprocess
import sys
import time

import pytest
import torch
from test_idgan import CODE_DIM, _write_squares_folder, _write_vae_snapshot

import dnnlib
from networks.stylegan2 import Discriminator, Generator
from torch_utils import misc, training_stats
from training import distributed, fault, launch
from training import training_loop as tl
from training.global_batch import GlobalBatchSampling
from training.latent import GaussianLatent
from training.loss import StyleGAN2Loss


def ddp_config(run_dir, num_gpus, data=None, **overrides):
    """Batch 8 over all ranks, one accumulation round per rank; no per-sample randomness drawn inside the
    networks or the loss (noise inputs, style mixing, path-length noise), which each rank draws on its own."""
    c = dnnlib.EasyDict(
        run_dir=str(run_dir), num_gpus=num_gpus,
        training_set_kwargs=dnnlib.EasyDict(class_name='training.dataset.BuiltinDataset', path='digits',
                                            max_size=64, use_labels=False, xflip=False, random_seed=0)
        if data is None else dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data),
        data_loader_kwargs=dnnlib.EasyDict(num_workers=0),
        G_kwargs=dnnlib.EasyDict(class_name='networks.stylegan2.Generator', z_dim=16, w_dim=16,
                                 mapping_kwargs=dnnlib.EasyDict(num_layers=1),
                                 synthesis_kwargs=dnnlib.EasyDict(channel_base=128, channel_max=8, use_noise=False)),
        D_kwargs=dnnlib.EasyDict(class_name='networks.stylegan2.Discriminator', channel_base=128, channel_max=8,
                                 epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=4)),
        G_opt_kwargs=dnnlib.EasyDict(class_name='torch.optim.Adam', lr=0.0025, betas=[0.0, 0.99], eps=1e-8),
        D_opt_kwargs=dnnlib.EasyDict(class_name='torch.optim.Adam', lr=0.0025, betas=[0.0, 0.99], eps=1e-8),
        loss_kwargs=dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1.0, style_mixing_prob=0,
                                    pl_weight=0),
        G_reg_interval=2, D_reg_interval=2, batch_size=8, batch_gpu=8 // num_gpus, ema_kimg=0.01, ema_rampup=0.05,
        total_kimg=0.024, kimg_per_tick=0.008, image_snapshot_ticks=100, network_snapshot_ticks=100,
        random_seed=5, precision='fp32', device='cpu')
    c.update(overrides)
    os.makedirs(run_dir, exist_ok=True)
    return c


def final_snapshot(run_dir):
    with open(tl.list_snapshots(str(run_dir))[-1], 'rb') as f:
        return pickle.load(f)


# Adam divides by the root of tiny second moments early on, which magnifies float rounding (a sum
# of two half-batch means is not bit-equal to one whole-batch mean) to ~1e-5 after a few steps.
TOLERANCE = dict(rtol=1e-3, atol=1e-4)


def assert_close_modules(a, b, what):
    for (name, x), (_, y) in zip(misc.named_params_and_buffers(a), misc.named_params_and_buffers(b)):
        torch.testing.assert_close(x, y, **TOLERANCE, msg=lambda m, name=name: f'{what}.{name}: {m}')


def idgan_overrides(vae):
    return dict(
        G_kwargs=dnnlib.EasyDict(class_name='networks.stylegan2.Generator', z_dim=0, w_dim=16,
                                 mapping_kwargs=dnnlib.EasyDict(class_name='disentangle.latents.CodeMappingNetwork',
                                                                code_dim=CODE_DIM, num_layers=1),
                                 synthesis_kwargs=dnnlib.EasyDict(channel_base=128, channel_max=8, use_noise=False)),
        latent_kwargs=dnnlib.EasyDict(class_name='disentangle.latents.PosteriorBankLatent', vae_pkl=vae,
                                      code_dim=CODE_DIM, nuisance_dim=2, bank_size=16, verbose=False),
        extra_terms_kwargs=[dnnlib.EasyDict(class_name='disentangle.idgan.DistillationTerm', vae_pkl=vae,
                                            distill_weight=0.5, distill_warmup=0)])


@pytest.fixture(scope='module')
def squares(tmp_path_factory):
    """A small image folder (a built-in dataset would import scikit-learn in every process)."""
    root = tmp_path_factory.mktemp('ddp')
    return _write_squares_folder(root / 'squares'), _write_vae_snapshot(root / 'vae.pkl')


@pytest.mark.parametrize('cfg', ['stylegan2', 'idgan'])
def test_two_gloo_processes_train_the_same_parameters_as_one(cfg, squares, tmp_path):
    data, vae = squares
    overrides = idgan_overrides(vae) if cfg == 'idgan' else {}
    for num_gpus in (1, 2):
        c = ddp_config(tmp_path / f'gpus{num_gpus}', num_gpus, data=data, **overrides)
        assert launch.launch_training(c) is None
    one, two = final_snapshot(tmp_path / 'gpus1'), final_snapshot(tmp_path / 'gpus2')
    assert one['resume_state']['cur_nimg'] == two['resume_state']['cur_nimg'] == 24
    assert two['resume_state']['num_gpus'] == 2 and len(two['resume_state']['rank_rng']) == 2
    modules = ['G', 'D', 'G_ema'] + (['latent', 'E'] if cfg == 'idgan' else [])
    for name in modules:
        assert_close_modules(one[name], two[name], name)
    with open(tmp_path / 'gpus2' / 'log.txt') as f:
        log = f.read()
    assert log.count('tick 0 ') == 1  # one set of tick lines, from rank 0
    if cfg == 'idgan':
        assert one['latent'].bank_mu.shape == two['latent'].bank_mu.shape == (16, CODE_DIM)
        assert torch.count_nonzero(one['latent'].bank_mu) > 0
    else:
        # Training moved D far more than the tolerance (its start is rebuilt from the seed), so the
        # comparison is not vacuous.
        torch.manual_seed(c.random_seed)
        common = dict(c_dim=0, img_resolution=one['G'].img_resolution, img_channels=one['G'].img_channels)
        dnnlib.util.construct_class_by_name(**c.G_kwargs, **common)
        D_start = dnnlib.util.construct_class_by_name(**c.D_kwargs, **common)
        moved = max(float((p - q).detach().abs().max()) for p, q in zip(D_start.parameters(), one['D'].parameters()))
        assert moved > 20 * TOLERANCE['atol']


def test_each_rank_keeps_its_stride_of_the_global_batch():
    sampler = GaussianLatent(z_dim=3)
    dataset = dnnlib.util.construct_class_by_name(class_name='training.dataset.BuiltinDataset', path='digits',
                                                  max_size=16, use_labels=False, xflip=False, random_seed=0)
    whole, _ = GlobalBatchSampling(6, 1, 0, seed=2, device='cpu').draw(sampler, dataset, num_phases=2)
    for rank in range(3):
        part, labels = GlobalBatchSampling(6, 3, rank, seed=2, device='cpu').draw(sampler, dataset, num_phases=2)
        assert len(labels) == 2 * 2
        for phase in range(2):
            assert torch.equal(part[phase].z, whole[phase].z[rank::3])


@pytest.mark.slow  # ~30 s: torchrun starts two fresh training processes
def test_torchrun_launch_trains_two_ranks_into_one_run_directory(squares, tmp_path):
    data, _vae = squares
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outdir = tmp_path / 'runs'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py',
           f'--outdir={outdir}', f'--data={data}', '--cfg=stylegan2', '--cbase=256', '--cmax=16', '--map=1', '--batch=4',
           '--workers=0', '--precision=fp32', '--aug=noaug', '--kimg=0.008', '--tick=0.004', '--snap=1']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = os.listdir(outdir)
    assert len(runs) == 1, runs                                  # rank 0 made it, rank 1 was told its name
    run_dir = outdir / runs[0]
    with open(run_dir / 'training_options.json') as f:
        assert json.load(f)['num_gpus'] == 2
    assert result.stdout.count('Number of processes: 2') == 1   # only rank 0 prints
    assert len(tl.list_snapshots(str(run_dir))) >= 1
    assert final_snapshot(run_dir)['G_ema'].img_resolution == 16   # the squares folder


# ----------------------------------------------------------------------------------------------
# Buffers: only the ones training changes are averaged, in one collective.

def small_networks():
    """G with noise inputs (noise_const buffers) and D with a frozen first layer (weight/bias buffers)."""
    torch.manual_seed(0)
    G = Generator(z_dim=4, c_dim=0, w_dim=8, img_resolution=16, img_channels=1, mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=128, channel_max=8))
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=1, channel_base=128, channel_max=8,
                      block_kwargs=dict(freeze_layers=1), epilogue_kwargs=dict(mbstd_group_size=2))
    return G.train(), D.train()


class RunningMean(torch.nn.Module):
    """A plug-in module with a running statistic the constant list has never heard of."""

    def __init__(self):
        super().__init__()
        self.register_buffer('feature_mean', torch.zeros([3]))


def test_average_buffers_reduces_w_avg_in_one_collective_and_leaves_constants_out(monkeypatch):
    G, D = small_networks()
    plug_in = RunningMean()
    assert any(name.endswith('noise_const') for name, _ in G.named_buffers())
    assert any(name.endswith('fromrgb.weight') for name, _ in D.named_buffers())  # frozen layer
    G.mapping.w_avg.copy_(torch.arange(8.0))
    before = {name: b.clone() for name, b in G.named_buffers()}
    calls = []

    def two_ranks(tensor, op=None):  # the other rank holds this rank's values + 2
        calls.append(tensor.numel())
        tensor.mul_(2).add_(2)

    monkeypatch.setattr(torch.distributed, 'all_reduce', two_ranks)
    names = distributed.average_buffers(dict(G=G, D=D, H=plug_in), num_gpus=2)
    assert names == ['G.mapping.w_avg', 'H.feature_mean']
    assert calls == [8 + 3]                                          # one flat tensor, one call
    torch.testing.assert_close(G.mapping.w_avg, torch.arange(8.0) + 1)
    torch.testing.assert_close(plug_in.feature_mean, torch.ones([3]))
    for name, b in G.named_buffers():
        if not name.endswith('w_avg'):
            assert torch.equal(b, before[name]), name                # noise_const, filters untouched
    assert distributed.average_buffers(dict(G=G, D=D), num_gpus=1) == [] and len(calls) == 1


def test_buffers_listed_as_constant_do_not_change_in_a_training_step():
    G, D = small_networks()
    loss = StyleGAN2Loss(device='cpu', G=G, D=D, latent_sampler=GaussianLatent(z_dim=4), style_mixing_prob=0.5,
                         r1_gamma=1, pl_weight=2)
    constants = {f'{net}.{name}': b.clone() for net, module in (('G', G), ('D', D))
                 for name, b in module.named_buffers() if name.rsplit('.', 1)[-1] in distributed.CONSTANT_BUFFERS}
    w_avg = G.mapping.w_avg.clone()
    params = list(G.parameters()) + list(D.parameters())
    optimizer = torch.optim.Adam(params, lr=0.01)
    real_img = torch.rand([4, 1, 16, 16]) * 2 - 1
    c = torch.zeros([4, 0])
    for phase in ('Gmain', 'Greg', 'Dmain', 'Dreg'):
        optimizer.zero_grad(set_to_none=True)
        module = G if phase.startswith('G') else D
        module.requires_grad_(True)
        loss.accumulate_gradients(phase=phase, real_img=real_img, real_c=c, gen_latents=GaussianLatent(4).sample(4),
                                  gen_c=c, gain=1, cur_nimg=0)
        module.requires_grad_(False)
        optimizer.step()
    assert not torch.equal(G.mapping.w_avg, w_avg)  # the step did run the networks in training mode
    buffers = {f'{net}.{name}': b for net, module in (('G', G), ('D', D)) for name, b in module.named_buffers()}
    for name, value in constants.items():
        assert torch.equal(buffers[name], value), f'{name} changed in training but is not averaged'


# ----------------------------------------------------------------------------------------------
# Stopping: a stop asked by one rank stops every rank at the same step.

def _train_rank_that_may_ask_to_stop(rank, c, init_file, out_dir, stopping_rank, stop_from_call):
    torch.set_num_threads(1)
    torch.distributed.init_process_group(backend='gloo', init_method=f'file://{init_file}', rank=rank,
                                         world_size=c.num_gpus)
    training_stats.init_multiprocessing(rank=rank, sync_device=torch.device('cpu'))
    calls = []

    def abort_fn():
        calls.append(None)
        return rank == stopping_rank and len(calls) >= stop_from_call

    try:
        tl.training_loop(**c, rank=rank, abort_fn=abort_fn)
    finally:
        torch.distributed.destroy_process_group()
    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(dict(abort_fn_calls=len(calls)), f)


def test_a_stop_asked_by_one_rank_stops_both_at_the_next_agreement_step(squares, tmp_path):
    data, _vae = squares
    # One tick (tick 0, after the first step) in 25 steps, so only the agreement interval can stop it.
    c = ddp_config(tmp_path / 'run', 2, data=data, total_kimg=0.2, kimg_per_tick=1)
    context = torch.multiprocessing.start_processes(
        _train_rank_that_may_ask_to_stop, args=(c, str(tmp_path / 'init'), str(tmp_path), 1, 2), nprocs=2,
        join=False, start_method='spawn')
    deadline = time.time() + 300
    try:
        while not context.join(timeout=5):  # a rank that stopped alone would leave the other hanging
            assert time.time() < deadline, 'the ranks did not stop together within 300 s'
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    # Rank 1 asks from its 2nd look at the flag; the looks are tick 0 (step 1) and step K.
    K = fault.ABORT_AGREEMENT_STEPS
    for rank in (0, 1):
        with open(tmp_path / f'rank{rank}.json') as f:
            assert json.load(f)['abort_fn_calls'] == 2
    assert final_snapshot(tmp_path / 'run')['resume_state']['cur_nimg'] == 8 * K
