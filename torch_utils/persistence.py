"""Self-contained pickles: a persistent object carries the source code of the module defining its class.

Decorate a class with @persistent_class and its instances pickle as a call to
`torch_utils.persistence._reconstruct_persistent_obj(meta)` where

    meta = dict(type='class', version=6, module_src=<full source of the defining module>,
                class_name=<class name>, state=<the instance state, normally its __dict__>)

This is byte-for-byte the layout of StyleGAN2-ADA's persistence module, so snapshots move freely
between the two code bases in both directions. Loading executes the stored source in a fresh module
(so a snapshot loads even after the training code changed or is gone); identical source is executed
only once per process, and source that matches an already imported module maps back to that module.

Loading a pickle executes the code inside it: only load pickles from sources you trust.
"""

import copy
import inspect
import io
import pickle
import sys
import threading
import types
import uuid

import dnnlib

FORMAT_VERSION = 6  # the official format's version number; both code bases refuse anything else
_version = FORMAT_VERSION  # the official module's name for it, kept for code that reads it

_persistent_classes = set()  # the decorated classes, for is_persistent()
_import_hooks = []           # callables applied to `meta` before reconstruction
_module_to_src_dict = {}     # module -> its source text
_src_to_module_dict = {}     # source text -> module (the imported original, or one built from a pickle)
_lock = threading.RLock()    # DataLoader workers and metric threads may unpickle concurrently


class PersistenceError(RuntimeError):
    """A persistent object cannot be pickled or rebuilt; the message says why and what to do."""


def is_persistent(obj):
    """True for a persistent class and for instances of one."""
    try:
        if obj in _persistent_classes:
            return True
    except TypeError:  # unhashable objects cannot be classes
        pass
    return type(obj) in _persistent_classes


def import_hook(hook):
    """Register `hook(meta) -> meta`, applied to every persistent object's meta before it is rebuilt.

    Hooks receive an EasyDict with fields type, version, module_src, class_name and state (itself an
    EasyDict), and may edit them, e.g. to patch old module source. Returns `hook`, so it can be used
    as a decorator.
    """
    if not callable(hook):
        raise TypeError(f'import_hook() expects a callable, got {type(hook).__name__}.')
    _import_hooks.append(hook)
    return hook


# ------------------------------------------------------------------------------------------------
# Source <-> module


def _module_to_src(module):
    """The source text of `module`, remembered so that the same text maps back to the same module."""
    with _lock:
        src = _module_to_src_dict.get(module)
        if src is None:
            try:
                src = inspect.getsource(module)
            except (OSError, TypeError) as error:
                raise PersistenceError(
                    f'Cannot read the source code of module "{module.__name__}" ({error}); persistent classes '
                    f'must live in a .py file (not an interactive session or a zip without sources).') from None
            _module_to_src_dict[module] = src
            # The most recently imported module with this text wins, also over one built from a
            # pickle: loads and deep copies then produce instances of the classes the code imports.
            _src_to_module_dict[src] = module
        return src


def _src_to_module(src):
    """A module whose code is `src`: an existing one with this exact text, else a fresh one running it."""
    with _lock:
        module = _src_to_module_dict.get(src)
        if module is not None:
            return module
        module_name = '_imported_module_' + uuid.uuid4().hex
        module = types.ModuleType(module_name)
        # Registered before exec: the @persistent_class decorators inside `src` look the module
        # and its source up while the module is still executing.
        sys.modules[module_name] = module
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
        try:
            exec(compile(src, f'<persistent module {module_name}>', 'exec'), module.__dict__)  # noqa: S102  (the format)
        except BaseException:
            del sys.modules[module_name]
            del _module_to_src_dict[module]
            del _src_to_module_dict[src]
            raise
        return module


# ------------------------------------------------------------------------------------------------
# Pickling


def _find_unpicklable(obj):
    """Pickle a skeleton of `obj` to surface unpicklable leaves (lambdas, open files...) early.

    Tensors, arrays and persistent objects are replaced by None first: they are known to pickle,
    and copying large tensors on every construction would be wasteful.
    """
    def skeleton(value):
        if isinstance(value, (list, tuple, set, frozenset)):
            return [skeleton(item) for item in value]
        if isinstance(value, dict):
            return [[skeleton(key), skeleton(item)] for key, item in value.items()]
        if value is None or isinstance(value, (str, bytes, bytearray, bool, int, float, complex)):
            return None
        type_name = f'{type(value).__module__}.{type(value).__name__}'
        if type_name in ('torch.Tensor', 'torch.nn.parameter.Parameter', 'numpy.ndarray') or is_persistent(value):
            return None
        return value

    with io.BytesIO() as sink:
        pickle.dump(skeleton(obj), sink)


def _reduce_persistent(self, parent_reduce):
    """Rewrite the default __reduce__ tuple so that unpickling goes through _reconstruct_persistent_obj."""
    fields = list(parent_reduce())
    fields += [None] * max(3 - len(fields), 0)
    if fields[0] is not _reconstruct_persistent_obj:
        meta = {'type': 'class', 'version': FORMAT_VERSION, 'module_src': self._orig_module_src,
                'class_name': self._orig_class_name, 'state': fields[2]}
        fields[0:3] = [_reconstruct_persistent_obj, (meta,), None]
    return tuple(fields)


def persistent_class(orig_class):
    """Class decorator: instances pickle together with the source code of `orig_class`'s module.

    The decorated class is a subclass that records the constructor arguments (deep copies, readable
    as `init_args` / `init_kwargs`, so an object can be rebuilt with new code:
    `type(G)(*G.init_args, **G.init_kwargs)`), and exposes `_orig_module_src` / `_orig_class_name`.
    The class must be defined at the top level of an importable .py module.
    """
    if not isinstance(orig_class, type):
        raise TypeError(f'persistent_class() decorates classes, got {type(orig_class).__name__}.')
    if is_persistent(orig_class):
        return orig_class
    orig_module = sys.modules.get(orig_class.__module__)
    if orig_module is None:
        raise PersistenceError(f'Class {orig_class.__name__} claims module "{orig_class.__module__}", which is '
                               f'not imported; define persistent classes in an importable module.')
    orig_module_src = _module_to_src(orig_module)
    class_name = orig_class.__name__

    class Persistent(orig_class):
        _orig_module_src = orig_module_src
        _orig_class_name = class_name

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # Same attribute names as StyleGAN2-ADA: they travel inside the pickled state.
            self._init_args = copy.deepcopy(args)
            self._init_kwargs = copy.deepcopy(kwargs)
            if class_name not in orig_module.__dict__:
                raise PersistenceError(
                    f'Persistent class {class_name} must be defined at the top level of module '
                    f'"{orig_module.__name__}", or it cannot be found again when unpickling.')
            try:
                _find_unpicklable(self.__reduce__())
            except Exception as error:
                raise PersistenceError(f'{class_name} would not be picklable ({error}); store only tensors, '
                                       f'numbers, strings, containers and persistent objects as attributes '
                                       f'and constructor arguments.') from error

        @property
        def init_args(self):
            return copy.deepcopy(self._init_args)

        @property
        def init_kwargs(self):
            return dnnlib.EasyDict(copy.deepcopy(self._init_kwargs))

        def __reduce__(self):
            return _reduce_persistent(self, super().__reduce__)

    # Look like the original class in reprs, module summaries and inspect.getsource().
    Persistent.__name__ = class_name
    Persistent.__qualname__ = orig_class.__qualname__
    Persistent.__module__ = orig_class.__module__
    Persistent.__doc__ = orig_class.__doc__
    _persistent_classes.add(Persistent)
    return Persistent


# ------------------------------------------------------------------------------------------------
# Unpickling


def _reconstruct_persistent_obj(meta):
    """Rebuild a persistent object from its meta dict (called by pickle; the name is part of the format)."""
    meta = dnnlib.EasyDict(meta)
    if meta.get('state') is not None:
        meta.state = dnnlib.EasyDict(meta.state)
    for hook in _import_hooks:
        meta = hook(meta)
        if meta is None:
            raise PersistenceError(f'Import hook {getattr(hook, "__name__", hook)!r} returned None; '
                                   f'hooks must return the (possibly modified) meta.')

    if meta.get('version') != FORMAT_VERSION:
        raise PersistenceError(f'This pickle uses persistence format version {meta.get("version")!r}, but this '
                               f'code reads version {FORMAT_VERSION}; convert the pickle or use matching code.')
    if meta.get('type') != 'class':
        raise PersistenceError(f'Unknown persistent object type {meta.get("type")!r} (expected "class").')

    class_name = meta.class_name
    try:
        module = _src_to_module(meta.module_src)
    except Exception as error:
        raise PersistenceError(
            f'Cannot rebuild {class_name}: running the source code stored in the pickle failed with '
            f'{type(error).__name__}: {error}. The stored code may need a dnnlib/torch_utils name that this '
            f'version lacks.') from error
    orig_class = module.__dict__.get(class_name)
    if not isinstance(orig_class, type):
        raise PersistenceError(f'The source code stored in the pickle defines no class named {class_name}.')
    cls = persistent_class(orig_class)

    obj = cls.__new__(cls)
    if meta.state is not None:
        setstate = getattr(obj, '__setstate__', None)
        if callable(setstate):
            setstate(meta.state)
        else:
            obj.__dict__.update(meta.state)
    return obj
