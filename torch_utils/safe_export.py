"""Weights-only exports: snapshots that load without running code from the file.

A `network-snapshot-*.pkl` is a pickle, and unpickling runs code: the persistent classes carry
their source, which is executed, and a crafted pickle can run anything. An *export* (`.pt`,
written by export.py) holds only what `torch.load(weights_only=True)` accepts: tensors, numbers,
strings, lists, tuples and dicts. Each persistent module of the snapshot becomes

    {'class_name': 'networks.stylegan2.Generator', 'init_args': [...], 'init_kwargs': {...},
     'state': {name: tensor, ...}}                  # parameters and buffers

and loading rebuilds it from the code installed here, by class name, with `class_name` restricted
to persistent `torch.nn.Module` classes defined in this project's packages (ALLOWED_PACKAGES).
Nothing in the file is executed, so the worst a hostile export can do is fail to load.

Module arguments that are themselves persistent modules are nested specs; any other object in the
constructor arguments makes export fail with a message naming it. State beyond parameters and
buffers must follow from the constructor arguments (the persistent-class contract that resume
relies on too). Plain data entries (e.g. `training_set_kwargs`) are kept; `resume_state` (optimiser
and RNG state, for continuing training) is not exported.

An export also holds `checksum`: the SHA-256 of a canonical serialisation of everything else in it
(`content_checksum`: class names, constructor arguments, every tensor's name, dtype, shape and
bytes, the data entries), so loading notices an export whose content changed after it was written.
It lives inside the dict because bytes appended to torch.save's zip would break the zip. Exports
without it (written before it existed) load unverified; SG2D_SKIP_CHECKSUM=1 skips the check.
"""

import hashlib
import importlib.util
import io
import os
import re
import warnings

import torch

import dnnlib
from torch_utils import misc, persistence

FORMAT = 'stylegan2-disentangle-export'
VERSION = 1
ALLOWED_PACKAGES = ('networks', 'training', 'torch_utils', 'disentangle', 'metrics')
SKIPPED_KEYS = ('resume_state',)
_NESTED = '__persistent_module__'
_CLASS_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+')
CHECKSUM_KEY = 'checksum'


class ExportError(Exception):
    """An object cannot be exported or an export cannot be loaded; one sentence saying why."""


# ----------------------------------------------------------------------------------------------
# Writing.

def _installed_module_with_source(src):
    """Dotted name of this project's module whose file text is `src` (for objects rebuilt from a pickle)."""
    for package in ALLOWED_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for root in spec.submodule_search_locations:
            for dirpath, _dirs, files in os.walk(root):
                for name in files:
                    if not name.endswith('.py'):
                        continue
                    path = os.path.join(dirpath, name)
                    with open(path, encoding='utf-8') as f:
                        if f.read() != src:
                            continue
                    rel = os.path.relpath(path, os.path.dirname(root))[:-3].replace(os.sep, '.')
                    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel
    return None


def class_name_of(obj):
    """The importable dotted name of a persistent object's class."""
    module = type(obj).__module__
    if module.startswith('_imported_module_'):  # rebuilt from stored source: find the installed twin
        module = _installed_module_with_source(type(obj)._orig_module_src)
        if module is None:
            raise ExportError(f'{type(obj).__name__} was written by code that differs from this installation '
                              f'(its stored source matches no module here); load and re-save it with this code first.')
    return f'{module}.{type(obj).__name__}'


def _plain(value, where):
    """`value` as weights-only-loadable data (EasyDicts become dicts, persistent modules nested specs)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ExportError(f'{where} has non-string keys; only string-keyed dicts can be exported.')
        return {k: _plain(v, f'{where}.{k}') for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f'{where}[{i}]') for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, torch.nn.Module) and persistence.is_persistent(value):
        return {_NESTED: module_spec(value, where)}
    raise ExportError(f'{where} is a {type(value).__name__}, which a weights-only file cannot hold.')


def module_spec(module, where='module'):
    """Class name, constructor arguments and parameters + buffers of a persistent module."""
    if not persistence.is_persistent(module):
        raise ExportError(f'{where} is a {type(module).__name__}, not a persistent class of this project.')
    state = {name: t.detach().cpu().clone() for name, t in module.state_dict(keep_vars=True).items()}
    return dict(class_name=class_name_of(module), init_args=_plain(list(module.init_args), f'{where}.init_args'),
                init_kwargs=_plain(dict(module.init_kwargs), f'{where}.init_kwargs'), state=state)


def snapshot_to_export(snapshot):
    """A weights-only dict for a snapshot dict; returns (export, names of entries left out)."""
    modules, data, skipped = {}, {}, []
    for key, value in snapshot.items():
        if key in SKIPPED_KEYS:
            skipped.append(key)
        elif isinstance(value, torch.nn.Module):
            modules[key] = module_spec(value, key)
        elif value is None:
            modules[key] = None
        else:
            try:
                data[key] = _plain(value, key)
            except ExportError:
                skipped.append(key)
    export = dict(format=FORMAT, version=VERSION, modules=modules, data=data)
    export[CHECKSUM_KEY] = content_checksum(export)
    return export, skipped


# ----------------------------------------------------------------------------------------------
# Checksum.

def _feed(hasher, value):
    """Add `value` to `hasher` in a form that depends only on its content.

    Every item is a one-letter kind, a length and a payload, so two different values never give
    the same byte sequence (no item can be mistaken for the end of another). Dict keys are sorted,
    so the order in which torch.load rebuilds a dict does not matter; tensors contribute their
    dtype, shape and raw bytes in row-major order, whatever their strides in memory.
    """
    def item(kind, payload):
        hasher.update(kind + len(payload).to_bytes(8, 'little') + payload)

    if value is None or isinstance(value, (bool, int, float, str)):
        item(b'v', f'{type(value).__name__}:{value!r}'.encode('utf-8'))  # repr of a float is exact
    elif isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        item(b'T', f'{tensor.dtype}:{list(value.shape)}'.encode('ascii'))
        raw = tensor.view(torch.uint8).numpy() if tensor.numel() else b''  # a view: no copy of the bytes
        item(b'B', memoryview(raw).cast('B'))
    elif isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ExportError('a dict with non-string keys cannot be part of an export.')
        item(b'd', str(len(value)).encode('ascii'))
        for key in sorted(value):
            item(b'k', key.encode('utf-8'))
            _feed(hasher, value[key])
    elif isinstance(value, (list, tuple)):
        item(b'l' if isinstance(value, list) else b't', str(len(value)).encode('ascii'))
        for element in value:
            _feed(hasher, element)
    else:
        raise ExportError(f'a {type(value).__name__} cannot be part of an export.')


def content_checksum(export):
    """SHA-256 (hex) of everything in an export dict except its own `checksum` entry."""
    hasher = hashlib.sha256()
    _feed(hasher, {key: value for key, value in export.items() if key != CHECKSUM_KEY})
    return hasher.hexdigest()


def checksum_matches(export):
    """False only for an export with a checksum that its content no longer hashes to."""
    stored = export.get(CHECKSUM_KEY)
    if stored is None:  # written before exports carried one
        return True
    return isinstance(stored, str) and stored == content_checksum(export)


_DAMAGED = ('its checksum does not match the one written with it, so the file was changed after it was written; '
            'use another export, or set ' + misc.CHECKSUM_SKIP_ENV + '=1 to load it anyway')


# ----------------------------------------------------------------------------------------------
# Reading.

def _allowed_class(class_name):
    if not isinstance(class_name, str) or not _CLASS_NAME.fullmatch(class_name) \
            or class_name.split('.')[0] not in ALLOWED_PACKAGES:
        raise ExportError(f'class "{class_name}" is not in this project\'s packages ({", ".join(ALLOWED_PACKAGES)}).')
    module_name, _, local = class_name.rpartition('.')
    try:
        cls = dnnlib.util.get_obj_by_name(class_name)
    except Exception:
        raise ExportError(f'class "{class_name}" does not exist in this installation.') from None
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module) and persistence.is_persistent(cls)
            and cls.__module__ == module_name and cls.__name__ == local):
        raise ExportError(f'"{class_name}" is not a persistent network class of this project.')
    return cls


def _unplain(value):
    if isinstance(value, dict):
        if set(value) == {_NESTED}:
            return build_module(value[_NESTED])
        return dnnlib.EasyDict({k: _unplain(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_unplain(v) for v in value)
    return value


def _assign_state(module, state):
    """Copy parameters and buffers in; buffers whose size follows the data (e.g. a bank) are replaced."""
    own = module.state_dict(keep_vars=True)
    unknown = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state))
    if unknown or missing:
        raise ExportError(f'the stored state of {type(module).__name__} does not fit its class '
                          f'(unknown: {unknown[:3]}, missing: {missing[:3]}).')
    with torch.no_grad():
        for name, value in state.items():
            target = own[name]
            if target.shape == value.shape:
                target.copy_(value)
                continue
            owner_name, _, attr = name.rpartition('.')
            owner = module.get_submodule(owner_name) if owner_name else module
            if attr not in owner._buffers:
                raise ExportError(f'parameter {name} of {type(module).__name__} has shape {list(value.shape)} in the '
                                  f'file but {list(target.shape)} in the class.')
            owner._buffers[attr] = value.to(target.dtype).clone()


def build_module(spec):
    """Rebuild one module from its spec (an allow-listed class constructed with the stored arguments)."""
    if not isinstance(spec, dict) or not {'class_name', 'init_args', 'init_kwargs', 'state'} <= set(spec):
        raise ExportError('a module entry lacks class_name, init_args, init_kwargs or state.')
    cls = _allowed_class(spec['class_name'])
    try:
        module = cls(*_unplain(list(spec['init_args'])), **_unplain(dict(spec['init_kwargs'])))
    except ExportError:
        raise
    except Exception as err:
        raise ExportError(f'{spec["class_name"]} cannot be built from the stored arguments ({type(err).__name__}: '
                          f'{err}); the export may come from a different version of this code.') from None
    _assign_state(module, spec['state'])
    return module.eval().requires_grad_(False)


def export_to_snapshot(export, verify=None):
    """The snapshot dict (modules rebuilt, data entries as EasyDicts) of a loaded export.

    Its checksum, if it has one, is verified first unless `verify` is False (None: unless
    SG2D_SKIP_CHECKSUM is set).
    """
    if not isinstance(export, dict) or export.get('format') != FORMAT:
        raise ExportError('it is not an export written by export.py (no format marker).')
    if export.get('version') != VERSION:
        raise ExportError(f'it uses export version {export.get("version")!r}; this code reads version {VERSION}.')
    if verify is None:
        verify = not misc.checksum_skipped()
    if verify and not checksum_matches(export):
        raise ExportError(f'it is damaged: {_DAMAGED}.')
    snapshot = {key: _unplain(value) for key, value in export.get('data', {}).items()}
    for key, spec in export.get('modules', {}).items():
        snapshot[key] = None if spec is None else build_module(spec)
    return snapshot


def is_export(name, head):
    """Whether a file should take the weights-only path: a `.pt` name, or torch.save's zip layout."""
    return str(name).endswith('.pt') or head[:4] == b'PK\x03\x04'


def load_export(path, name=None):
    """Load an export (a path or binary file) with torch.load(weights_only=True) and rebuild its modules."""
    path_name = name or path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # torch's notes on pickle protocols are not the user's concern
            raw = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise ExportError(f'{path_name} does not exist.') from None
    except Exception as err:
        # torch's own text advises re-loading with weights_only=False; name only what it refused.
        found = re.search(r'Unsupported global: GLOBAL ([\w.]+)', str(err))
        why = f'it would need {found.group(1)}' if found else \
            'it is a plain pickle, not torch.save\'s format' if 'Unsupported operand' in str(err) else type(err).__name__
        raise ExportError(f'{path_name} is not a weights-only file ({why}); it was not loaded, since loading it '
                          f'could run code: use an export written by export.py.') from None
    if isinstance(raw, dict) and raw.get('format') == FORMAT and raw.get('version') == VERSION \
            and not misc.checksum_skipped():
        try:
            matches = checksum_matches(raw)
        except ExportError as err:
            raise ExportError(f'{path_name}: {err}') from None
        if not matches:
            raise ExportError(f'{path_name} is damaged: {_DAMAGED}.')
    try:
        return export_to_snapshot(raw, verify=False)  # verified above, with the file's name
    except ExportError as err:
        raise ExportError(f'{path_name}: {err}') from None


def save_export(export, path):
    """Write `export` with torch.save, with a fresh checksum of its content, atomically.

    The checksum is recomputed here so that it always describes what is written, even if the dict
    changed after snapshot_to_export. torch.save serialises into memory first: writing its zip
    straight into a file on a full disk fails inside torch with an obscure error, whereas a plain
    write of the finished bytes gives an OSError that names the file.
    """
    export = dict(export)
    export[CHECKSUM_KEY] = content_checksum(export)
    buffer = io.BytesIO()
    torch.save(export, buffer)
    misc.atomic_write_bytes(path, buffer.getbuffer())
