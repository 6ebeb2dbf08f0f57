"""--compile: torch.compile of the main phases (training/loss.py), its fallback, and its snapshots.

Compiling is slow on a small CPU (inductor generates and builds C++ for every graph), so the tests
that really compile run only with RUN_COMPILE_TESTS=1; the fallback and the wiring are always tested.
"""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from networks.stylegan2 import Discriminator, Generator
from training import loss as loss_module
from training import training_loop as tl
from training.latent import GaussianLatent
from training.loss import StyleGAN2Loss

from test_training_loop import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
compiling = pytest.mark.skipif(os.environ.get('RUN_COMPILE_TESTS') != '1',
                               reason='compiles with inductor (minutes on 2 CPU cores); set RUN_COMPILE_TESTS=1')


def tiny_loss(**kwargs):
    torch.manual_seed(0)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=1,
                  mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=128, channel_max=8))
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=1, channel_base=128, channel_max=8,
                      epilogue_kwargs=dict(mbstd_group_size=2))
    G, D = G.train().requires_grad_(False), D.train().requires_grad_(False)
    return StyleGAN2Loss(device='cpu', G=G, D=D, latent_sampler=GaussianLatent(z_dim=16), r1_gamma=1.0, **kwargs)


def phase_grads(loss, phase, seed=1):
    module = loss.G if phase.startswith('G') else loss.D
    torch.manual_seed(seed)
    real = torch.rand(4, 1, 16, 16) * 2 - 1
    c = torch.zeros(4, 0)
    module.requires_grad_(True)
    loss.accumulate_gradients(phase, real, c, loss.latent_sampler.sample(4), c, gain=1, cur_nimg=0)
    module.requires_grad_(False)
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    for p in module.parameters():
        p.grad = None
    return grads


def test_a_failing_compiler_falls_back_to_eager_with_one_message(monkeypatch, capsys):
    def broken_compile(fn, **_kwargs):
        def run(*_args, **_kw):
            raise RuntimeError('InductorError: no working C++ compiler found\nmore detail')
        return run
    monkeypatch.setattr(torch, 'compile', broken_compile)
    loss = tiny_loss()
    assert loss.compile_main_phases() is False
    out = capsys.readouterr().out
    assert '--compile: torch.compile does not work on cpu here' in out and 'no working C++ compiler' in out
    assert 'more detail' not in out and 'Traceback' not in out
    assert loss.synthesis_main is loss.G.synthesis and loss.D_main is loss.D
    grads = phase_grads(loss, 'Gmain')  # still trains, eagerly
    assert grads and all(torch.isfinite(g).all() for g in grads.values())


def test_the_main_phases_use_the_compiled_modules_and_regularisation_the_eager_ones(monkeypatch):
    calls = []

    def recording_compile(module, **_kwargs):
        def run(*args, **kwargs):
            calls.append(type(module).__name__)
            return module(*args, **kwargs)
        return run
    monkeypatch.setattr(loss_module, 'compile_module', lambda module, device: recording_compile(module))
    loss = tiny_loss()
    assert loss.compile_main_phases() is True
    for phase, expected in [('Gmain', ['SynthesisNetwork', 'Discriminator']),
                            ('Dmain', ['SynthesisNetwork', 'Discriminator', 'Discriminator']),
                            ('Greg', []), ('Dreg', [])]:
        calls.clear()
        phase_grads(loss, phase)
        assert calls == expected, phase


def test_train_py_passes_compile_to_the_loop(tmp_path):
    from click.testing import CliRunner

    import train
    args = [f'--outdir={tmp_path}', '--data=digits', '--dry-run', '--cbase=256', '--cmax=16', '--workers=0']
    output = CliRunner().invoke(train.main, args, catch_exceptions=False).output
    assert '"torch_compile": false' in output and 'torch.compile' not in output.split('Device, precision:')[1]
    output = CliRunner().invoke(train.main, args + ['--compile=1'], catch_exceptions=False).output
    assert '"torch_compile": true' in output and 'torch.compile' in output.split('Device, precision:')[1]


@compiling
def test_compiled_main_phases_give_the_eager_gradients(monkeypatch):
    import torch._inductor.config
    monkeypatch.setattr(torch._inductor.config, 'fallback_random', True)  # the eager noise draws
    eager, compiled = tiny_loss(style_mixing_prob=0), tiny_loss(style_mixing_prob=0)
    assert compiled.compile_main_phases() is True
    for phase in ('Gmain', 'Dmain'):
        a, b = phase_grads(eager, phase), phase_grads(compiled, phase)
        assert a.keys() == b.keys()
        for name in a:  # fused kernels sum in another order: equal to float32 rounding
            torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6, msg=f'{phase} {name}')


@compiling
def test_a_compiled_two_tick_run_trains_with_finite_losses_and_eager_snapshots(tmp_path):
    c = tiny_config(tmp_path / 'run', total_kimg=0.016, torch_compile=True)  # 4 steps, 2 ticks
    last = tl.training_loop(**c)
    with open(tmp_path / 'run' / 'stats.jsonl') as f:
        ticks = [json.loads(line) for line in f]
    assert len(ticks) >= 2
    for name in ('Loss/G/loss', 'Loss/D/loss', 'Loss/r1_penalty', 'Loss/pl_penalty'):
        assert np.isfinite(ticks[-1][name]['mean']), name
    with open(last, 'rb') as f:
        data = pickle.load(f)
    for name in ('G', 'D', 'G_ema'):
        assert not isinstance(data[name], torch._dynamo.eval_frame.OptimizedModule)
        assert type(data[name].synthesis if name != 'D' else data[name]).__name__ in ('SynthesisNetwork', 'Discriminator')
    # The snapshot is a plain one: a fresh process without torch.compile renders from it.
    code = (f'import pickle, torch; G = pickle.load(open({str(last)!r}, "rb"))["G_ema"]; '
            f'img = G(torch.randn(2, G.z_dim), torch.zeros(2, 0)); assert torch.isfinite(img).all()')
    subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO, capture_output=True)
