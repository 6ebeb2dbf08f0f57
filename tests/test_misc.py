"""torch_utils.misc: tensor/module helpers with the official names, RNG capture, atomic writes."""

import os
import pickle
import random
import stat
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

from torch_utils import misc

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ------------------------------------------------------------------------------------------------
# Tensors


def test_constant_values_shape_and_default_dtype():
    t = misc.constant([1, 2, 3], shape=[2, 3])
    assert t.dtype == torch.get_default_dtype() and t.device.type == 'cpu'
    assert torch.equal(t, torch.tensor([[1.0, 2, 3], [1, 2, 3]]))
    assert t.is_contiguous()
    assert misc.constant(7, dtype=torch.int64).item() == 7


def test_constant_is_cached_per_value_dtype_and_device():
    a = misc.constant(np.float32(0.25), shape=[4])
    assert misc.constant(np.float32(0.25), shape=(4,)) is a
    assert misc.constant(np.float32(0.25), shape=[4], device='cpu') is a
    assert misc.constant(np.float32(0.5), shape=[4]) is not a
    assert misc.constant(np.float32(0.25), shape=[4], dtype=torch.float64) is not a
    assert misc.constant(np.float64(0.25), shape=[4]) is not a  # the source dtype is part of the key


def test_constant_memory_format():
    t = misc.constant(1.0, shape=[2, 3, 4, 5], memory_format=torch.channels_last)
    assert t.is_contiguous(memory_format=torch.channels_last) and t.shape == (2, 3, 4, 5)


def test_nan_to_num():
    x = torch.tensor([float('nan'), float('inf'), -float('inf'), 1.0])
    y = misc.nan_to_num(x)
    assert y[0] == 0 and y[1] == torch.finfo(x.dtype).max and y[2] == torch.finfo(x.dtype).min and y[3] == 1


def test_suppress_tracer_warnings_only_silences_tracer_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with misc.suppress_tracer_warnings():
            warnings.warn('hidden', torch.jit.TracerWarning)
            warnings.warn('shown', UserWarning)
        warnings.warn('shown again', torch.jit.TracerWarning)
    assert [str(w.message) for w in caught] == ['shown', 'shown again']


def test_assert_shape_accepts_matching_and_wildcard_sizes():
    misc.assert_shape(torch.zeros(2, 3, 4), [None, 3, 4])
    misc.assert_shape(torch.zeros(2, 3, 4), [2, None, None])


def test_assert_shape_reports_the_mismatch():
    with pytest.raises(AssertionError, match=r'Wrong size for dimension 1: got 3, expected 5'):
        misc.assert_shape(torch.zeros(2, 3, 4), [None, 5, 4])
    with pytest.raises(AssertionError, match=r'Wrong number of dimensions: got 3 .*expected 2'):
        misc.assert_shape(torch.zeros(2, 3, 4), [2, 3])


def test_assert_shape_inside_jit_trace():
    def fn(x):
        misc.assert_shape(x, [None, 3])
        return x * 2

    traced = torch.jit.trace(fn, torch.ones(4, 3), check_trace=False)
    assert torch.equal(traced(torch.ones(5, 3)), torch.full([5, 3], 2.0))


def test_profiled_function_keeps_name_and_records_a_profiler_range():
    @misc.profiled_function
    def scale_by_three(x):
        """Docstring kept."""
        return x * 3

    assert scale_by_three.__name__ == 'scale_by_three' and scale_by_three.__doc__ == 'Docstring kept.'
    with torch.autograd.profiler.profile() as prof:
        y = scale_by_three(torch.ones(2))
    assert torch.equal(y, torch.full([2], 3.0))
    assert 'scale_by_three' in {event.name for event in prof.function_events}


# ------------------------------------------------------------------------------------------------
# InfiniteSampler


def _take(sampler, count):
    iterator = iter(sampler)
    return [next(iterator) for _ in range(count)]


def test_sampler_without_shuffle_cycles_in_order():
    assert _take(misc.InfiniteSampler(range(4), shuffle=False), 10) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


def test_sampler_is_deterministic_per_seed_and_differs_between_seeds():
    a = _take(misc.InfiniteSampler(range(50), seed=1), 200)
    assert a == _take(misc.InfiniteSampler(range(50), seed=1), 200)
    assert a != _take(misc.InfiniteSampler(range(50), seed=2), 200)
    assert all(isinstance(i, int) for i in a)


def test_sampler_visits_every_item_about_equally_often():
    counts = np.bincount(_take(misc.InfiniteSampler(range(20), seed=0), 2000), minlength=20)
    assert counts.sum() == 2000 and counts.min() >= 70 and counts.max() <= 130


def test_sampler_passes_differ_with_window_and_repeat_without():
    mixing = _take(misc.InfiniteSampler(range(30), seed=0, window_size=0.5), 60)
    assert mixing[:30] != mixing[30:]
    fixed = _take(misc.InfiniteSampler(range(30), seed=0, window_size=0), 60)
    assert fixed[:30] == fixed[30:] and sorted(fixed[:30]) == list(range(30)) and fixed[:30] != list(range(30))


def test_sampler_ranks_take_disjoint_strided_slices_of_one_stream():
    full = _take(misc.InfiniteSampler(range(25), seed=3), 300)
    rank_streams = [_take(misc.InfiniteSampler(range(25), rank=r, num_replicas=3, seed=3), 100) for r in range(3)]
    for rank in range(3):
        assert rank_streams[rank] == full[rank::3]


@pytest.mark.parametrize('kwargs', [{'rank': 2, 'num_replicas': 2}, {'num_replicas': 0}, {'window_size': 1.5}])
def test_sampler_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        misc.InfiniteSampler(range(5), **kwargs)


def test_sampler_rejects_empty_dataset():
    with pytest.raises(ValueError, match='non-empty'):
        misc.InfiniteSampler([])


# ------------------------------------------------------------------------------------------------
# Modules


def test_params_and_buffers_lists_parameters_then_buffers():
    bn = torch.nn.BatchNorm1d(3)
    names = [name for name, _ in misc.named_params_and_buffers(bn)]
    assert names == ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']
    assert [t.shape for t in misc.params_and_buffers(bn)] == [t.shape for _, t in misc.named_params_and_buffers(bn)]


def test_copy_params_and_buffers_copies_matching_names_and_keeps_requires_grad():
    torch.manual_seed(0)
    src = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    dst = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 1))
    src[1].running_mean.fill_(0.7)
    dst[0].weight.requires_grad_(False)
    extra_before = dst[2].weight.detach().clone()
    misc.copy_params_and_buffers(src, dst)
    assert torch.equal(dst[0].weight, src[0].weight) and torch.equal(dst[1].running_mean, src[1].running_mean)
    assert not dst[0].weight.requires_grad and dst[0].bias.requires_grad
    assert torch.equal(dst[2].weight, extra_before)
    assert dst[0].weight.data_ptr() != src[0].weight.data_ptr()
    with pytest.raises(KeyError, match='"2.weight"'):
        misc.copy_params_and_buffers(src, dst, require_all=True)


def test_copy_params_and_buffers_rejects_other_shapes():
    with pytest.raises(ValueError, match='"weight" has shape \\[2, 3\\] in the source but \\[2, 4\\]'):
        misc.copy_params_and_buffers(torch.nn.Linear(3, 2), torch.nn.Linear(4, 2))


def test_ddp_sync_without_ddp_is_a_plain_block():
    module = torch.nn.Linear(2, 2)
    with misc.ddp_sync(module, sync=False):
        module(torch.ones(1, 2)).sum().backward()
    assert module.weight.grad is not None


@pytest.mark.slow  # ~10 s: two fresh processes import torch and DDP (which pulls in torch._dynamo)
def test_ddp_helpers_with_two_gloo_processes(tmp_path):
    worker = tmp_path / 'worker.py'
    worker.write_text(textwrap.dedent('''
        import sys
        import torch
        from torch_utils import misc

        rank, init_file = int(sys.argv[1]), sys.argv[2]
        torch.distributed.init_process_group('gloo', init_method='file://' + init_file, rank=rank, world_size=2)
        torch.manual_seed(rank)
        module = torch.nn.Linear(2, 1)
        try:
            misc.check_ddp_consistency(module)
            print('consistent-before')
        except AssertionError as error:
            print('inconsistent:', error)
        misc.check_ddp_consistency(module, ignore_regex=r'Linear\\.(weight|bias)')
        misc.check_ddp_consistency(module, ignore_regex=[r'.*\\.weight', r'Linear\\.bias'])
        ddp = torch.nn.parallel.DistributedDataParallel(module)  # broadcasts rank 0's parameters
        misc.check_ddp_consistency(ddp.module)
        print('consistent-after')

        x = torch.full([1, 2], float(rank + 1))
        with misc.ddp_sync(ddp, sync=False):
            ddp(x).sum().backward()
        print('local-grad', module.weight.grad.tolist())
        module.weight.grad = None
        with misc.ddp_sync(ddp, sync=True):
            ddp(x).sum().backward()
        print('synced-grad', module.weight.grad.tolist(), flush=True)
        # DDP's reducer holds a reference to the gloo group: left alive, it frees the group during
        # interpreter shutdown, where gloo's threads can abort the process ('terminate called
        # without an active exception', SIGABRT) after all the checks above have passed.
        del ddp
        torch.distributed.barrier()  # neither rank tears down gloo while the other still talks to it
        torch.distributed.destroy_process_group()
    '''))
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    init_file = str(tmp_path / 'rendezvous')
    procs = [subprocess.Popen([sys.executable, str(worker), str(rank), init_file], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for rank in range(2)]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            outputs.append(out.splitlines())
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert outputs[0][0] == 'consistent-before'  # rank 0 compares with itself
    assert outputs[1][0] == 'inconsistent: Linear.weight, Linear.bias differ(s) between this process and rank 0'
    for rank, lines in enumerate(outputs):
        assert lines[1] == 'consistent-after'
        assert lines[2] == f'local-grad {[[float(rank + 1)] * 2]}'  # no all-reduce: own input only
        assert lines[3] == 'synced-grad [[1.5, 1.5]]'  # mean over ranks of inputs 1 and 2


class _TwoHeads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Identity())
        self.head_a = torch.nn.Linear(4, 2)
        self.head_b = torch.nn.Linear(4, 1, bias=False)
        self.register_buffer('offset', torch.zeros(2))

    def forward(self, x):
        h = self.body(x)
        return self.head_a(h) + self.offset, self.head_b(h)


def test_print_module_summary_counts_each_tensor_once(capsys):
    module = _TwoHeads()
    x = torch.ones(5, 3)
    outputs = misc.print_module_summary(module, [x])
    assert torch.equal(outputs[0], module(x)[0]) and torch.equal(outputs[1], module(x)[1])
    lines = capsys.readouterr().out.strip().splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines if not line.startswith('---')}
    assert rows['_TwoHeads'] == ['Parameters', 'Buffers', 'Output', 'shape', 'Datatype']
    assert rows['body.0'] == ['16', '-', '[5,', '4]', 'float32']
    assert 'body.1' not in rows and 'body' not in rows  # Identity and its parent add no new tensor
    assert rows['head_a'] == ['10', '-', '[5,', '2]', 'float32']
    assert rows['head_b'] == ['4', '-', '[5,', '1]', 'float32']
    assert rows['<top-level>:0'] == ['-', '2', '[5,', '2]', 'float32']
    assert rows['<top-level>:1'] == ['-', '-', '[5,', '1]', 'float32']
    assert rows['Total'] == ['30', '2', '-', '-']


def test_print_module_summary_options(capsys):
    misc.print_module_summary(_TwoHeads(), [torch.ones(1, 3)], skip_redundant=False)
    names = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert {'body.1', 'body'} <= names
    misc.print_module_summary(_TwoHeads(), [torch.ones(1, 3)], max_nesting=1)
    names = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert 'body.0' not in names and 'body' in names and 'head_a' in names


# ------------------------------------------------------------------------------------------------
# RNG state


def _draw():
    return random.random(), float(np.random.rand()), torch.rand(3).tolist(), torch.randint(0, 1000, [2]).tolist()


def test_rng_state_round_trip_through_pickle():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    _draw()
    state = pickle.loads(pickle.dumps(misc.get_rng_state()))
    expected = _draw()
    _draw()  # advance further
    misc.set_rng_state(state)
    assert _draw() == expected
    assert set(state) == {'python', 'numpy', 'torch', 'cuda'}
    if not torch.cuda.is_available():
        assert state.cuda is None


# ------------------------------------------------------------------------------------------------
# Atomic writes


def test_atomic_write_bytes_creates_and_replaces(tmp_path):
    path = tmp_path / 'file.bin'
    misc.atomic_write_bytes(path, b'first')
    misc.atomic_write_bytes(str(path), b'second')
    assert path.read_bytes() == b'second'
    assert os.listdir(tmp_path) == ['file.bin']


def test_atomic_write_uses_a_temp_file_in_the_same_directory(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, 'replace', lambda src, dst: (renames.append((src, dst)), real_replace(src, dst)))
    misc.atomic_write_bytes(tmp_path / 'x.bin', b'data')
    (src, dst), = renames
    assert os.path.dirname(src) == str(tmp_path) and dst == str(tmp_path / 'x.bin') and src != dst


def test_atomic_write_respects_umask(tmp_path):
    (tmp_path / 'plain.bin').write_bytes(b'')
    misc.atomic_write_bytes(tmp_path / 'atomic.bin', b'')
    def mode(name):
        return stat.S_IMODE(os.stat(tmp_path / name).st_mode)
    assert mode('atomic.bin') == mode('plain.bin')


def test_failed_pickle_dump_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / 'snapshot.pkl'
    misc.atomic_pickle_dump({'kimg': 10}, path)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        misc.atomic_pickle_dump({'kimg': 20, 'bad': lambda: None}, path)
    assert pickle.loads(path.read_bytes()) == {'kimg': 10}
    assert os.listdir(tmp_path) == ['snapshot.pkl']
