"""Run no-grad forward passes "on CUDA" on a CPU-only build, to prove placement and sync-freedom.

`torch._subclasses.fake_tensor.FakeTensorMode` computes shapes, dtypes and devices without data:
a tensor made with `device='cuda:0'` is a fake CUDA tensor, and

- an op mixing a CUDA tensor with a CPU tensor (other than a 0-dim one, as on real CUDA) raises a
  device-mismatch error;
- `.item()`, `bool()`, `float()` of a tensor, `.tolist()` and data-dependent shapes (`nonzero`,
  boolean-mask indexing) raise a data-dependent-output error: each of those is a host sync on
  a real GPU.

Two gaps of the CPU-only build are closed here (`FakeCuda`), so that fake CUDA behaves like real
CUDA for the ops our code uses:

1. Some kernels open a CUDA device guard before the fake implementation runs (`copy_`, advanced
   indexing, slice assignment) in their Python binding, before any dispatch, and a CPU-only
   build has no CUDA guard. Such a call is redone on meta tensors (shapes only) after the
   device check real CUDA does.
2. A random op on CUDA with a CPU `torch.Generator` is accepted by fake tensors but raises on
   real CUDA; it raises here too (`torch.Generator(device='cuda')` gives a stand-in that reports
   CUDA, since a CPU-only build cannot make a CUDA generator). So does a blocking copy of a CPU
   tensor to CUDA, scalars included (`torch.tensor(x, device='cuda')`, `.to('cuda')`): CUDA
   synchronises the stream before such a copy, and it is the sign of a tensor built or drawn on
   the wrong device. `non_blocking=True` copies (from pinned memory) pass; a 0-dim CPU tensor as
   an operand of a CUDA op passes too (it travels as a kernel argument, no copy).

Modules are moved with `FakeCuda.module(m)`: in place, parameters and buffers become fake CUDA
tensors of the same shapes and dtypes; build a module before entering, move it inside. A later
`.to('cuda')` of such a module is the no-op it is on a GPU. Autograd on fake CUDA tensors aborts
a CPU-only build, so everything here runs under `torch.no_grad()`.
"""

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA = torch.device('cuda:0')
_GUARD_MESSAGE = 'not linked with support for cuda devices'


_RealGenerator = torch.Generator


class _CudaGeneratorStandIn(_RealGenerator):
    """What `torch.Generator(device='cuda')` gives inside FakeCuda: a CPU generator that reports CUDA.

    A CPU-only build cannot make a CUDA generator; this one draws nothing real (fake tensors keep no
    values) but carries the device, so the generator check below sees what real CUDA would.
    """

    @property
    def device(self):
        return CUDA


_real_module_to = torch.nn.Module.to


def _module_to(module, *args, **kwargs):
    """Module.to inside FakeCuda: moving a module that is already all fake CUDA to CUDA is the
    no-op it is on a GPU (torch would try to swap each tensor with itself and fail)."""
    device, dtype, _non_blocking, _memory_format = torch._C._nn._parse_to(*args, **kwargs)
    tensors = list(module.parameters()) + list(module.buffers())
    if dtype is None and device is not None and device.type == 'cuda' and tensors \
            and all(isinstance(t, FakeTensor) and t.device.type == 'cuda' for t in tensors):
        return module
    return _real_module_to(module, *args, **kwargs)


def _generator(device='cpu'):
    if torch.device(device).type == 'cuda':
        return _CudaGeneratorStandIn()
    return _RealGenerator(device)


class PlacementError(RuntimeError):
    """A tensor was created or drawn on the wrong device (real CUDA would raise or copy per call)."""


def _tensors(args, kwargs):
    return [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]


def _check_same_device(func, tensors):
    devices = {t.device for t in tensors if not (t.device.type == 'cpu' and t.dim() == 0)}
    if len(devices) > 1:
        raise PlacementError(f'{func} mixes devices {sorted(str(d) for d in devices)}.')


class _DrawAndCopyChecks(TorchDispatchMode):
    """Gap 2: host-to-device copies are refused (the generator check is in _FunctionChecks)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            source = args[1] if func is torch.ops.aten.copy_.default else args[0]
            target = args[0].device if func is torch.ops.aten.copy_.default else kwargs.get('device', source.device)
            non_blocking = args[2] if func is torch.ops.aten.copy_.default and len(args) > 2 \
                else kwargs.get('non_blocking', False)
            if source.device.type == 'cpu' and torch.device(target).type == 'cuda' and not non_blocking:
                raise PlacementError(f'blocking host-to-device copy of a CPU tensor of shape {list(source.shape)} '
                                     f'(CUDA waits for the stream before such a copy).')
        return func(*args, **kwargs)


_FROM_HOST_DATA = (torch.tensor, torch.as_tensor, torch.Tensor.new_tensor)


class _FunctionChecks(TorchFunctionMode):
    """Gap 2's generator check (the Python generator object is only seen here) and gap 1: an op
    whose Python binding opens a CUDA device guard is redone on meta tensors."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FROM_HOST_DATA:   # host values copied in C++ below any dispatch: caught here
            data = args[1] if func is torch.Tensor.new_tensor else args[0]
            target = kwargs.get('device', args[0].device if func is torch.Tensor.new_tensor else None)
            if target is not None and torch.device(target).type == 'cuda' and not isinstance(data, torch.Tensor):
                raise PlacementError(f'{func.__name__} copies host values to {target} (a blocking copy); build '
                                     f'it once (a buffer), or use torch.full / torch.zeros on the device.')
        generator = kwargs.get('generator')
        if isinstance(generator, _RealGenerator):
            target = kwargs.get('device')
            if target is None:
                tensors = _tensors(args, kwargs)
                target = tensors[0].device if tensors else torch.device('cpu')
            if torch.device(target).type != generator.device.type:
                raise PlacementError(f'{getattr(func, "__name__", func)} draws on {target} with a {generator.device} generator.')
        try:
            return func(*args, **kwargs)
        except RuntimeError as error:
            if _GUARD_MESSAGE not in str(error):
                raise
        tensors = _tensors(args, kwargs)
        _check_same_device(func, tensors)
        device = next((t.device for t in tensors if t.device.type == 'cuda'), CUDA)

        def to_meta(a):
            if isinstance(a, torch.Tensor):
                return torch.empty_strided(a.shape, a.stride(), dtype=a.dtype, device='meta')
            if isinstance(a, torch.device) and a.type == 'cuda':
                return torch.device('meta')
            return a
        meta_args = tree_map(to_meta, args)
        out = func(*meta_args, **tree_map(to_meta, kwargs))
        name = getattr(func, '__name__', '')
        if name == '__setitem__' or (name.endswith('_') and not name.endswith('__')):
            return args[0]  # in place: the shapes were checked on meta; the fake target stays as it is

        def to_device(a):
            if isinstance(a, torch.Tensor) and a.device.type == 'meta':
                return torch.empty_strided(a.shape, a.stride(), dtype=a.dtype, device=device)
            return a
        return tree_map(to_device, out)


class FakeCuda:
    """Context manager: fake CUDA tensors with real CUDA's placement rules (module docstring)."""

    def __init__(self):
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)
        self._checks = _DrawAndCopyChecks()
        self._guard = _FunctionChecks()
        self._no_grad = torch.no_grad()

    def __enter__(self):
        self._no_grad.__enter__()
        self.mode.__enter__()
        self._checks.__enter__()
        self._guard.__enter__()
        torch.Generator = _generator
        torch.nn.Module.to = _module_to
        return self

    def __exit__(self, *exc):
        torch.Generator = _RealGenerator
        torch.nn.Module.to = _real_module_to
        self._guard.__exit__(*exc)
        self._checks.__exit__(*exc)
        self.mode.__exit__(*exc)
        self._no_grad.__exit__(*exc)
        _forget_fake_state()
        return False

    def tensor(self, t):
        """A fake CUDA tensor with t's shape, dtype and strides (values are not kept)."""
        return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=CUDA)

    def module(self, module):
        """module with every parameter and buffer replaced by a fake CUDA tensor (in place); returns it."""
        previous = torch.__future__.get_overwrite_module_params_on_conversion()
        torch.__future__.set_overwrite_module_params_on_conversion(True)
        try:
            module.requires_grad_(False)
            return module._apply(self.tensor)
        finally:
            torch.__future__.set_overwrite_module_params_on_conversion(previous)


def _forget_fake_state():
    """Drop fake tensors that module-level caches kept (constants, statistics counters): later code,
    real CUDA tests included, must never meet them."""
    from torch_utils import misc, training_stats
    for key in [k for k, v in misc._constant_cache.items() if isinstance(v, FakeTensor)]:
        del misc._constant_cache[key]
    for per_device in training_stats._counters.values():
        for device in [d for d, v in per_device.items() if isinstance(v, FakeTensor)]:
            del per_device[device]


def is_fake_cuda(t):
    return isinstance(t, FakeTensor) and t.device.type == 'cuda'
