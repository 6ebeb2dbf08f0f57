"""Loading network snapshots: ours and those written by the official StyleGAN2-ADA code.

Official pickles were often written under numpy 1.x, whose internal modules were renamed in numpy
2 (`numpy.core` -> `numpy._core`); the unpickler maps the names of whichever numpy is installed.
Exports (`.pt`, torch_utils/safe_export.py) take the weights-only path: nothing in them is executed.
Both kinds carry a checksum when this code wrote them; a file that no longer matches it is refused
as damaged (SG2D_SKIP_CHECKSUM=1 loads it anyway).
Snapshots without plug-in keys get the plain Gaussian latent sampler, so every GAN pickle can be
used for generation and evaluation the same way.
"""

import io
import pickle

import numpy as np

import dnnlib
from torch_utils import misc, safe_export
from training.fault import CHECKSUM_MISMATCH, pickle_problem


class SnapshotError(Exception):
    """A snapshot that cannot be used, with one sentence saying why."""


_NUMPY_2 = int(np.__version__.split('.')[0]) >= 2


def map_numpy_module(module):
    """The name under which the installed numpy offers a module a pickle refers to."""
    if _NUMPY_2 and (module == 'numpy.core' or module.startswith('numpy.core.')):
        return 'numpy._core' + module[len('numpy.core'):]
    if not _NUMPY_2 and (module == 'numpy._core' or module.startswith('numpy._core.')):
        return 'numpy.core' + module[len('numpy._core'):]
    return module


class _CompatUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        return super().find_class(map_numpy_module(module), name)


def load_pickle(f):
    """Unpickle from a binary file object with numpy-1/2 name mapping."""
    return _CompatUnpickler(f).load()


def load_network_pkl(path_or_file, what='network snapshot'):
    """Load a snapshot dict from a path, URL or binary file object.

    Raises SnapshotError (not a deep unpickling traceback) for missing, truncated, damaged or
    foreign files. Damaged means the checksum written with the file (misc.atomic_pickle_dump,
    safe_export.save_export) does not match its bytes; SG2D_SKIP_CHECKSUM=1 loads it anyway.
    Files without a checksum (official pickles, older snapshots and exports) load unverified.
    """
    try:
        if isinstance(path_or_file, (str, bytes)) or hasattr(path_or_file, '__fspath__'):
            with dnnlib.util.open_url(str(path_or_file), verbose=False) as f:
                raw = f.read()
        else:  # read whole, so that an open file gets the same checks as a path
            raw = path_or_file.read()
            name = getattr(path_or_file, 'name', None)
            path_or_file = name if isinstance(name, str) and name else 'the snapshot file'
        if safe_export.is_export(path_or_file, raw):  # weights only: nothing in the file is executed
            return _load_export(raw, path_or_file, what)
        problem = pickle_problem(raw)  # checked without executing anything
        if problem == CHECKSUM_MISMATCH:
            raise SnapshotError(f'{path_or_file} is damaged: {problem}; use another snapshot, or set '
                                f'{misc.CHECKSUM_SKIP_ENV}=1 to load it anyway.')
        if problem is not None:
            raise SnapshotError(f'{path_or_file} is truncated or not a pickle ({problem}); use another snapshot.')
        data = load_pickle(io.BytesIO(raw))
    except FileNotFoundError:
        raise SnapshotError(f'{path_or_file} does not exist.')
    except (EOFError, pickle.UnpicklingError) as err:
        raise SnapshotError(f'{path_or_file} is truncated or not a pickle ({err}); use another snapshot.')
    except (AttributeError, ImportError, ModuleNotFoundError) as err:
        raise SnapshotError(f'{path_or_file} needs code that is not available here ({err}).')
    if not isinstance(data, dict):
        raise SnapshotError(f'{path_or_file} is not a {what} (it holds a {type(data).__name__}, not a dict).')
    return data


def _load_export(raw, name, what):
    try:
        data = safe_export.load_export(io.BytesIO(raw), name=str(name))
    except safe_export.ExportError as err:
        raise SnapshotError(str(err))
    if not data:
        raise SnapshotError(f'{name} is an empty export, not a {what}.')
    return data


def load_generator(path, device='cpu'):
    """(G_ema, latent sampler, snapshot dict) ready for inference on `device`."""
    data = load_network_pkl(path)
    G = data.get('G_ema', data.get('G'))
    if G is None:
        raise SnapshotError(f'{path} holds no generator (no G_ema or G key); is it a VAE snapshot?')
    sampler = data.get('latent')
    if sampler is None:
        from training.latent import GaussianLatent
        sampler = GaussianLatent(z_dim=G.z_dim)
    G = G.eval().requires_grad_(False).to(device)
    sampler = sampler.eval().to(device)
    return G, sampler, data
