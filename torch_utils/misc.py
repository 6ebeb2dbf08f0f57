"""Tensor, module and file helpers with StyleGAN2-ADA's names, plus RNG capture and atomic writes for resume.

Network source stored in official pickles calls constant(), assert_shape(), profiled_function() and
suppress_tracer_warnings from here, so their signatures and semantics must not change.
"""

import contextlib
import hashlib
import os
import pickle
import random
import re
import uuid
import warnings

import numpy as np
import torch

import dnnlib

# ------------------------------------------------------------------------------------------------
# Tensors

_constant_cache = {}


def constant(value, shape=None, dtype=None, device=None, memory_format=None):
    """A cached tensor holding `value` (broadcast to `shape`), so repeated constants are built once per device.

    Returned tensors are shared between callers: do not modify them in place.
    """
    array = np.asarray(value)
    shape = tuple(shape) if shape is not None else None
    dtype = torch.get_default_dtype() if dtype is None else dtype
    device = torch.device('cpu') if device is None else torch.device(device)
    memory_format = torch.contiguous_format if memory_format is None else memory_format

    key = (array.shape, array.dtype.str, array.tobytes(), shape, dtype, device, memory_format)
    tensor = _constant_cache.get(key)
    if tensor is None:
        tensor = torch.as_tensor(array.copy(), dtype=dtype, device=device)
        if shape is not None:
            tensor = tensor.expand(torch.broadcast_shapes(tensor.shape, shape))
        tensor = tensor.contiguous(memory_format=memory_format)
        _constant_cache[key] = tensor
    return tensor


def draw_device(device, generator=None):
    """The device on which random values for `device` are drawn: that device itself.

    Drawing where the values are used keeps a training step free of host-to-device copies. A
    `torch.Generator` must live on that device (CUDA refuses a CPU generator and vice versa); the
    error names the fix instead of failing inside torch.
    """
    device = torch.device(device)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f'a {generator.device.type} torch.Generator cannot draw values for {device}; create it with '
                         f'torch.Generator(device={str(device)!r}).')
    return device


nan_to_num = torch.nan_to_num  # kept under its old name: official network code imports it from here


class suppress_tracer_warnings(warnings.catch_warnings):  # the official (lower-case) name
    """Context manager that silences torch.jit.TracerWarning, e.g. for shape checks during tracing."""

    def __enter__(self):
        if torch.compiler.is_compiling():  # nothing to silence, and catch_warnings breaks the graph
            return None
        result = super().__enter__()
        warnings.simplefilter('ignore', category=torch.jit.TracerWarning)
        return result

    def __exit__(self, *exc_info):
        if torch.compiler.is_compiling():
            return None
        return super().__exit__(*exc_info)


def assert_shape(tensor, ref_shape):
    """Raise AssertionError unless `tensor.shape` matches `ref_shape`; None in ref_shape matches any size.

    Sizes may be tensors (as during torch.jit.trace); those are checked symbolically.
    """
    if tensor.ndim != len(ref_shape):
        raise AssertionError(f'Wrong number of dimensions: got {tensor.ndim} (shape {list(tensor.shape)}), '
                             f'expected {len(ref_shape)} (shape {list(ref_shape)})')
    for dim, (size, ref_size) in enumerate(zip(tensor.shape, ref_shape)):
        if ref_size is None:
            continue
        if isinstance(size, torch.Tensor) or isinstance(ref_size, torch.Tensor):
            with suppress_tracer_warnings():  # as_tensor() results become trace constants, which is intended
                torch._assert(torch.equal(torch.as_tensor(size), torch.as_tensor(ref_size)),
                              f'Wrong size for dimension {dim}: expected {ref_size}')
        elif size != ref_size:
            raise AssertionError(f'Wrong size for dimension {dim}: got {size}, expected {ref_size} '
                                 f'(shape {list(tensor.shape)}, expected {list(ref_shape)})')


def profiled_function(fn):
    """Decorator: run `fn` inside torch.autograd.profiler.record_function(fn.__name__)."""
    def profiled(*args, **kwargs):
        with torch.autograd.profiler.record_function(fn.__name__):
            return fn(*args, **kwargs)
    profiled.__name__ = fn.__name__
    profiled.__qualname__ = getattr(fn, '__qualname__', fn.__name__)
    profiled.__doc__ = fn.__doc__
    profiled.__wrapped__ = fn
    return profiled


# ------------------------------------------------------------------------------------------------
# Data


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless stream of dataset indices for a DataLoader; rank r of R gets every R-th index of one stream.

    With shuffle=True the order starts as a seeded permutation and keeps mixing: after each index is
    visited it swaps places with one of the `window_size` fraction of positions just behind it, so
    consecutive passes differ without a hard epoch boundary. All ranks use the same seed, hence the
    same stream, and their strided slices are disjoint.
    """

    def __init__(self, dataset, rank=0, num_replicas=1, shuffle=True, seed=0, window_size=0.5):
        if len(dataset) < 1:
            raise ValueError('InfiniteSampler needs a non-empty dataset.')
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f'InfiniteSampler needs 0 <= rank < num_replicas, got rank={rank}, '
                             f'num_replicas={num_replicas}.')
        if not 0 <= window_size <= 1:
            raise ValueError(f'window_size must be in [0, 1], got {window_size}.')
        super().__init__()
        self.dataset = dataset
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size

    def __iter__(self):
        size = len(self.dataset)
        order = np.arange(size)
        window = 0
        if self.shuffle:
            rng = np.random.RandomState(self.seed)
            rng.shuffle(order)
            window = int(np.rint(size * self.window_size))
        step = 0
        while True:
            pos = step % size
            if step % self.num_replicas == self.rank:
                yield int(order[pos])
            if window >= 2:
                other = (pos - rng.randint(window)) % size
                order[pos], order[other] = order[other], order[pos]
            step += 1


# ------------------------------------------------------------------------------------------------
# Modules


def params_and_buffers(module):
    """All parameters followed by all buffers of `module`."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f'Expected a torch.nn.Module, got {type(module).__name__}.')
    return list(module.parameters()) + list(module.buffers())


def named_params_and_buffers(module):
    """(name, tensor) for all parameters followed by all buffers of `module`."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f'Expected a torch.nn.Module, got {type(module).__name__}.')
    return list(module.named_parameters()) + list(module.named_buffers())


@torch.no_grad()
def copy_params_and_buffers(src_module, dst_module, require_all=False):
    """Copy every parameter/buffer of `dst_module` that `src_module` has under the same name.

    Used for resuming and for building G_ema. With require_all=True a missing name is an error.
    Shapes must agree; requires_grad of the destination is kept.
    """
    src_tensors = dict(named_params_and_buffers(src_module))
    for name, tensor in named_params_and_buffers(dst_module):
        source = src_tensors.get(name)
        if source is None:
            if require_all:
                raise KeyError(f'copy_params_and_buffers: source {type(src_module).__name__} has no tensor "{name}".')
            continue
        if source.shape != tensor.shape:
            raise ValueError(f'copy_params_and_buffers: "{name}" has shape {list(source.shape)} in the source but '
                             f'{list(tensor.shape)} in the destination; the two networks have different architectures.')
        tensor.copy_(source.detach())


@contextlib.contextmanager
def ddp_sync(module, sync):
    """Inside the block, skip DDP's gradient all-reduce unless `sync` (for gradient accumulation)."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f'Expected a torch.nn.Module, got {type(module).__name__}.')
    if sync or not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        yield
    else:
        with module.no_sync():
            yield


def check_ddp_consistency(module, ignore_regex=None):
    r"""Assert that every parameter and buffer equals rank 0's copy (NaNs compare equal).

    Names are '<ClassName>.<tensor name>'; those fully matching `ignore_regex` (one pattern or a list)
    are skipped, e.g. r'.*\.w_avg' for statistics that each rank tracks on its own.
    Needs torch.distributed to be initialised. Every tensor is broadcast before the error is raised,
    so the ranks' collective calls stay matched and rank 0 does not hang.
    """
    patterns = [] if ignore_regex is None else [ignore_regex] if isinstance(ignore_regex, str) else list(ignore_regex)
    differing = []
    for name, tensor in named_params_and_buffers(module):
        full_name = f'{type(module).__name__}.{name}'
        if any(re.fullmatch(pattern, full_name) for pattern in patterns):
            continue
        local = tensor.detach()
        reference = local.clone()
        torch.distributed.broadcast(tensor=reference, src=0)
        if not torch.equal(nan_to_num(local), nan_to_num(reference)):
            differing.append(full_name)
    if differing:
        raise AssertionError(f'{", ".join(differing)} differ(s) between this process and rank 0')


def print_module_summary(module, inputs, max_nesting=3, skip_redundant=True):
    """Run `module(*inputs)` and print a table of submodules: parameters, buffers, output shapes and dtypes.

    Each parameter, buffer and output tensor is counted once, at the first submodule that finishes
    with it; with skip_redundant, rows that add nothing new are left out. Returns the outputs.
    """
    if not isinstance(module, torch.nn.Module) or isinstance(module, torch.jit.ScriptModule):
        raise TypeError('print_module_summary() needs a regular (not scripted) torch.nn.Module.')
    if not isinstance(inputs, (tuple, list)):
        raise TypeError('print_module_summary() takes the inputs as a tuple or list.')

    depth = [0]
    finished = []  # (submodule, output tensors) in the order the forward passes end

    def enter(_module, _inputs):
        depth[0] += 1

    def leave(submodule, _inputs, outputs):
        depth[0] -= 1
        if depth[0] <= max_nesting:
            outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
            finished.append((submodule, [t for t in outputs if isinstance(t, torch.Tensor)]))

    handles = [m.register_forward_pre_hook(enter) for m in module.modules()]
    handles += [m.register_forward_hook(leave) for m in module.modules()]
    try:
        outputs = module(*inputs)
    finally:
        for handle in handles:
            handle.remove()

    seen = set()
    rows = []
    names = {m: name for name, m in module.named_modules()}
    total_params = total_buffers = 0
    for submodule, tensors in finished:
        new_params = [t for t in submodule.parameters() if id(t) not in seen]
        new_buffers = [t for t in submodule.buffers() if id(t) not in seen]
        new_outputs = [t for t in tensors if id(t) not in seen]
        seen.update(id(t) for t in new_params + new_buffers + new_outputs)
        if skip_redundant and not (new_params or new_buffers or new_outputs):
            continue
        num_params = sum(t.numel() for t in new_params)
        num_buffers = sum(t.numel() for t in new_buffers)
        total_params += num_params
        total_buffers += num_buffers
        name = '<top-level>' if submodule is module else names.get(submodule, type(submodule).__name__)
        shapes = [str(list(t.shape)) for t in tensors] or ['-']
        dtypes = [str(t.dtype).replace('torch.', '') for t in tensors] or ['-']
        suffix = ':0' if len(tensors) > 1 else ''
        rows.append([name + suffix, str(num_params or '-'), str(num_buffers or '-'), shapes[0], dtypes[0]])
        for index in range(1, len(tensors)):
            rows.append([f'{name}:{index}', '-', '-', shapes[index], dtypes[index]])

    header = [type(module).__name__, 'Parameters', 'Buffers', 'Output shape', 'Datatype']
    rule = ['---'] * len(header)
    table = [header, rule] + rows + [rule, ['Total', str(total_params), str(total_buffers), '-', '-']]
    widths = [max(len(row[col]) for row in table) for col in range(len(header))]
    print()
    for row in table:
        print('  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print()
    return outputs


# ------------------------------------------------------------------------------------------------
# Random number generator state (for exact resume)


def get_rng_state():
    """Picklable snapshot of the Python, NumPy and torch (CPU, and every CUDA device if present) RNGs."""
    state = dnnlib.EasyDict(
        python=random.getstate(),
        numpy=np.random.get_state(),
        torch=torch.get_rng_state(),
        cuda=None,
    )
    if torch.cuda.is_available():
        state.cuda = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore a get_rng_state() snapshot. CUDA states are restored for the devices both runs have."""
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    cuda_states = state.get('cuda')
    if cuda_states and torch.cuda.is_available():
        count = min(len(cuda_states), torch.cuda.device_count())
        if count != len(cuda_states):
            warnings.warn(f'RNG state was saved on {len(cuda_states)} CUDA devices but {torch.cuda.device_count()} '
                          f'are visible; restoring the first {count}.')
        for device_index in range(count):
            torch.cuda.set_rng_state(cuda_states[device_index], device=device_index)


# ------------------------------------------------------------------------------------------------
# Atomic file writes: a reader (or a crash) sees either the old file or the complete new one


@contextlib.contextmanager
def atomic_open(path, mode='wb'):
    """Open a temporary file next to `path` for writing; on success fsync it and rename it to `path`.

    If the block raises, the temporary file is removed and `path` is left untouched.
    """
    if 'w' not in mode:
        raise ValueError(f'atomic_open() only writes; got mode "{mode}".')
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    # Hidden and suffixed, so that globs such as network-snapshot-*.pkl never pick it up.
    temp_path = os.path.join(directory, f'.{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp')
    try:
        with open(temp_path, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_path, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.remove(temp_path)
        if isinstance(err, OSError) and (err.filename is None or err.filename == temp_path):
            # Name the file the user asked for, not the hidden temporary one (a full disk, ...).
            raise OSError(err.errno, err.strerror or str(err), path) from err
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    """Persist the rename itself; not possible (nor needed) on every platform."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path, data):
    """Write `data` to `path` atomically (temporary file in the same directory, fsync, os.replace)."""
    with atomic_open(path, 'wb') as file:
        file.write(data)


def atomic_pickle_dump(obj, path, protocol=pickle.DEFAULT_PROTOCOL):
    """Pickle `obj` to `path` atomically, followed by a checksum trailer (see `checksum_trailer`).

    The pickle streams to disk and is hashed on the way, so large snapshots need no extra RAM.
    """
    with atomic_open(path, 'wb') as file:
        hashing = HashingWriter(file)
        pickle.dump(obj, hashing, protocol=protocol)
        file.write(checksum_trailer(hashing.hexdigest()))


# ------------------------------------------------------------------------------------------------
# Checksums of written files (verified on load by training/fault.py and torch_utils/safe_export.py)

# Every unpickler stops at the pickle's STOP opcode and never reads what follows, so a fixed-length
# trailer after it keeps our snapshots loadable by any pickle.load (the official StyleGAN2-ADA
# loader included) while letting our loaders notice a file that changed after it was written.
CHECKSUM_TAG = b'\nSG2D-SHA256 '
CHECKSUM_TRAILER_SIZE = len(CHECKSUM_TAG) + 64 + 1  # tag, SHA-256 in hex, newline
CHECKSUM_SKIP_ENV = 'SG2D_SKIP_CHECKSUM'


def checksum_trailer(hexdigest):
    """The bytes written after a pickle: the tag, the SHA-256 (hex) of the pickle bytes, a newline."""
    trailer = CHECKSUM_TAG + hexdigest.encode('ascii') + b'\n'
    assert len(trailer) == CHECKSUM_TRAILER_SIZE
    return trailer


def checksum_skipped():
    """Whether the user asked (SG2D_SKIP_CHECKSUM=1) to load files whose checksum does not match."""
    return os.environ.get(CHECKSUM_SKIP_ENV, '').strip().lower() not in ('', '0', 'false', 'no')


class HashingWriter:
    """A binary file stand-in that passes every write on to `file` and adds it to a SHA-256."""

    def __init__(self, file):
        self.file = file
        self.hash = hashlib.sha256()

    def write(self, data):
        self.hash.update(data)
        return self.file.write(data)

    def hexdigest(self):
        return self.hash.hexdigest()
