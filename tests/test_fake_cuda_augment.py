"""The ADA augment pipeline on CUDA: no host sync, no host-to-device copy, fixed shapes.

Inside `FakeCuda` (tests/fake_cuda.py) a host read (`.item()`, `bool()`, `nonzero()`, boolean-mask
indexing), a non-scalar CPU-to-CUDA copy or a device mismatch raises, so a pipe that runs there
end to end never waits for the device. Fake tensors carry no values and cannot run backward, so
the masked execution is also run on real CPU tensors, backward included, under a dispatch mode
that records the ops which would make the host wait on a GPU.
"""

import pytest
import torch
from fake_cuda import CUDA, FakeCuda, is_fake_cuda
from torch._subclasses.fake_tensor import DataDependentOutputException
from torch.utils._python_dispatch import TorchDispatchMode

from training.augment import AUGPIPE_SPECS, DEFAULT_AUGPIPE, AugmentPipe


def run_on_fake_cuda(pipe, shape, dtype=torch.float32, **kwargs):
    """pipe (built on the CPU) moved to fake CUDA at p = 0.5 and run on a batch of `shape`."""
    with FakeCuda() as fake:
        pipe = fake.module(pipe.train())
        pipe.p.fill_(0.5)
        images = torch.randn(shape, device=CUDA).to(dtype)
        out = pipe(images, **kwargs)
        assert is_fake_cuda(out)
        return out


@pytest.mark.parametrize('preset', sorted({DEFAULT_AUGPIPE, 'bgcfnc', 'blit', 'geom', 'bg'}))
@pytest.mark.parametrize('shape', [(8, 3, 32, 32), (4, 1, 16, 15)], ids=['rgb-square', 'grey-odd-aspect'])
def test_the_augment_pipe_runs_on_fake_cuda_without_a_host_sync(preset, shape):
    out = run_on_fake_cuda(AugmentPipe(**AUGPIPE_SPECS[preset]), shape)
    assert out.device == CUDA and tuple(out.shape) == shape and out.dtype == torch.float32


def test_the_augment_pipe_keeps_half_precision_input_on_fake_cuda():
    out = run_on_fake_cuda(AugmentPipe(**AUGPIPE_SPECS['bgcfnc']), (4, 3, 16, 16), dtype=torch.float16)
    assert out.dtype == torch.float16 and out.shape == (4, 3, 16, 16)


def test_debug_percentile_runs_on_fake_cuda_without_a_host_sync():
    out = run_on_fake_cuda(AugmentPipe(**AUGPIPE_SPECS['bgcfnc']), (4, 3, 16, 16), debug_percentile=0.7)
    assert out.shape == (4, 3, 16, 16)


def test_sub_batch_execution_forced_on_fake_cuda_is_caught_as_a_host_sync():
    # The CPU's execution (the only one before) reads the path decision on the host: the check has teeth.
    pipe = AugmentPipe(**AUGPIPE_SPECS[DEFAULT_AUGPIPE], geometry_execution='sub_batch')
    with pytest.raises(DataDependentOutputException):
        run_on_fake_cuda(pipe, (8, 3, 32, 32))


SYNC_OPS = {'aten::_local_scalar_dense', 'aten::nonzero', 'aten::masked_select', 'aten::_unique2',
            'aten::unique_consecutive', 'aten::unique_dim', 'aten::bincount', 'aten::repeat_interleave'}


class SyncOps(TorchDispatchMode):
    """Collects the names of dispatched ops that make the host wait for a GPU."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._overloadpacket._qualified_op_name in SYNC_OPS:
            self.seen.add(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('geometry_execution, syncs', [('masked', False), ('sub_batch', True)])
def test_masked_execution_makes_no_host_sync_forward_or_backward(geometry_execution, syncs):
    pipe = AugmentPipe(**AUGPIPE_SPECS['bgcfnc'], geometry_execution=geometry_execution)
    pipe.p.fill_(0.5)
    images = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    weights = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    counter = SyncOps()
    with counter:
        score = (pipe(images) * weights).square().sum()
        (grad,) = torch.autograd.grad(score, images, create_graph=True)  # R1-style double backward
        grad.square().sum().backward()
    assert images.grad.abs().sum() > 0
    assert bool(counter.seen) == syncs, sorted(counter.seen)
