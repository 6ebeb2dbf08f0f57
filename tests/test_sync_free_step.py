"""A training step never waits for the device: counted on real CPU steps, autograd included.

Fake CUDA tensors (tests/test_fake_cuda.py) cannot run backward passes. Here the real training
loop runs on the CPU with every per-step function wrapped in `HostSyncCounter`, a dispatch mode
that records each op which, on a GPU, makes the host wait for the device: reading a value
(`.item()`, `bool()`, `float()`, `.tolist()` all become `aten._local_scalar_dense`), and ops whose
output shape depends on the data (`nonzero`, boolean-mask indexing, `unique`, ...). Those ops are
dispatched on the CPU exactly as on CUDA, so a count of zero here means zero on a GPU.

Wrapped: the latent draw of every phase (samplers), the loss phases Gmain/Greg/Dmain/Dreg (with
their plug-in terms and the augment pipe), the buffer averaging, the EMA update and the ADA
update. The optimiser steps are called but not counted (see `uncounted`). Per-tick maintenance (the progress line, snapshots) may sync and
is not wrapped.
"""

import functools
import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

import dnnlib

from training import distributed, training_loop as tl
from training.augment import AdaptiveP
from training.global_batch import GlobalBatchSampling
from training.loss import StyleGAN2Loss

SYNC_OPS = {
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten.nonzero.default,
    torch.ops.aten.masked_select.default,
    torch.ops.aten._unique2.default,
    torch.ops.aten.unique_consecutive.default,
    torch.ops.aten.unique_dim.default,
    torch.ops.aten.bincount.default,
    torch.ops.aten.repeat_interleave.Tensor,
}
# Every augmentation, and the geometry executed as on a GPU: 'auto' picks per-image sub-batches
# on the CPU (free there), the fixed-shape masked path everywhere else.
# Boolean-mask indexing runs nonzero inside the CPU kernel, below the dispatcher: caught by its mask.
MASK_INDEXING = {torch.ops.aten.index, torch.ops.aten.index_put, torch.ops.aten.index_put_}
AUGMENT = dnnlib.EasyDict(class_name='training.augment.AugmentPipe', xflip=1, rotate90=1, xint=1, scale=1, rotate=1,
                          aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1, imgfilter=1,
                          noise=1, cutout=1, geometry_execution='masked')


class HostSyncCounter(TorchDispatchMode):
    """Records (op, where) for every op of SYNC_OPS run inside it."""

    def __init__(self, log, where):
        super().__init__()
        self.log, self.where = log, where

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNC_OPS or func._overloadpacket in {op._overloadpacket for op in SYNC_OPS}:
            self.log.append((str(func), self.where))
        elif func._overloadpacket in MASK_INDEXING and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else [])):
            self.log.append((f'{func} with a boolean mask', self.where))   # nonzero inside the kernel
        return func(*args, **(kwargs or {}))


@pytest.fixture
def wrapped(monkeypatch):
    """Wraps every per-step function of the training loop: (syncs they made, names of those called)."""
    log, calls = [], []

    def note(where, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            calls.append(where)
            with HostSyncCounter(log, where):
                return fn(*args, **kwargs)
        return wrapper
    monkeypatch.setattr(StyleGAN2Loss, 'accumulate_gradients', note('loss', StyleGAN2Loss.accumulate_gradients))
    monkeypatch.setattr(GlobalBatchSampling, 'draw', note('latents', GlobalBatchSampling.draw))
    monkeypatch.setattr(AdaptiveP, 'update', note('ada', AdaptiveP.update))
    monkeypatch.setattr(tl, 'update_ema', note('ema', tl.update_ema))
    monkeypatch.setattr(distributed, 'average_buffers', note('buffers', distributed.average_buffers))
    monkeypatch.setattr(torch.optim.Adam, 'step', uncounted(calls, 'opt', torch.optim.Adam.step))
    return log, calls


def uncounted(calls, where, fn):
    """Adam's step counters are host tensors even for CUDA parameters (torch.optim's default, not
    capturable): reading them waits for nothing, but on the CPU it looks like any other read."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        calls.append(where)
        with _disable_current_modes():
            return fn(*args, **kwargs)
    return wrapper


def test_the_counter_sees_a_sync():
    log = []
    x = torch.randn(5, requires_grad=True)
    with HostSyncCounter(log, 'here'):
        y = (x * 2).sum()
        y.backward()
        assert log == []
        float(y)
        x[x > 0].sum()
        x.detach().nonzero()
    assert [op for op, _ in log] == ['aten._local_scalar_dense.default', 'aten.index.Tensor with a boolean mask',
                                     'aten.nonzero.default']


def stylegan2_config(root):
    from test_training_loop import tiny_config
    return tiny_config(root / 'run', total_kimg=0.016)


def idgan_config(root):
    from test_idgan import idgan_loop_kwargs
    return idgan_loop_kwargs(root)[1]


def genes_config(root):
    from test_idgan import CODE_DIM, idgan_loop_kwargs
    c = idgan_loop_kwargs(root)[1]
    c.latent_kwargs = dnnlib.EasyDict(class_name='disentangle.stylegenes.GeneLatent', num_genes=4, num_variants=5,
                                      code_latent_kwargs=dict(c.latent_kwargs, nuisance_dim=0))
    c.G_kwargs = dnnlib.EasyDict(c.G_kwargs, w_dim=16, mapping_kwargs=dnnlib.EasyDict(
        class_name='disentangle.stylegenes.GeneMappingNetwork', num_genes=4, num_variants=5, code_dim=CODE_DIM,
        num_layers=1))
    c.loss_kwargs = dnnlib.EasyDict(c.loss_kwargs, style_mixing_prob=0.5)
    return c


def infogan_cr_config(root):
    from test_infogan import _loop_config
    terms = [dnnlib.EasyDict(class_name='disentangle.infogan.InfoTerm', info_weight_cat=1.0, info_weight_cont=0.05),
             dnnlib.EasyDict(class_name='disentangle.contrastive.ContrastiveTerm', cr_weight=2.0, cr_start_kimg=0,
                             cr_gap='0.5')]
    c = _loop_config(root, terms, dict(cat_sizes=[3], cont_dim=2, noise_dim=2))
    os.makedirs(c.run_dir)
    return c


@pytest.mark.parametrize('make_config', [stylegan2_config, idgan_config, genes_config, infogan_cr_config],
                         ids=['stylegan2', 'idgan', 'genes', 'infogan-cr'])
def test_a_training_step_with_ada_makes_no_host_sync(make_config, wrapped, tmp_path):
    log, calls = wrapped
    c = make_config(tmp_path)
    c.update(augment_kwargs=AUGMENT, augment_p=0.5, ada_target=0.6, ada_interval=1, ada_kimg=0.1)
    tl.training_loop(**c)
    for where in ('loss', 'latents', 'ada', 'ema', 'opt'):
        assert where in calls, f'{where} was never called: the wrapping missed part of the training step'
    assert log == [], f'host syncs in the training step: {sorted(set(log))}'
