"""Built-in datasets that need no file: `--data=dsprites`, `--data=shapes3d`, `--data=digits`.

    from training.procedural import get_builtin
    source = get_builtin('dsprites')
    images = source.images([0, 1, 2])                      # uint8 [3, 1, 64, 64]
    factors = source.index_to_factors([0, 1, 2])           # int64 [3, 5]

See base.ImageSource for the full interface and each module's docstring for how it is rendered.
"""

import threading

from training.procedural.base import ImageSource, contact_sheet, save_contact_sheet  # noqa: F401

BUILTIN_NAMES = ('dsprites', 'shapes3d', 'digits')

_instances = {}
_lock = threading.Lock()


def is_builtin(name):
    """True when `name` is one of BUILTIN_NAMES (exact, lower-case)."""
    return isinstance(name, str) and name in BUILTIN_NAMES


def get_builtin(name):
    """The cached ImageSource for a built-in name; ValueError naming the valid names otherwise."""
    if not is_builtin(name):
        raise ValueError(f'Unknown built-in dataset {name!r}; valid names are {", ".join(BUILTIN_NAMES)}.')
    with _lock:
        if name not in _instances:
            _instances[name] = _construct(name)
        return _instances[name]


def _construct(name):
    # Imported here so that using one dataset does not pay for the others (sklearn is slow to import).
    if name == 'dsprites':
        from training.procedural.dsprites import DSprites
        return DSprites()
    if name == 'shapes3d':
        from training.procedural.shapes3d import Shapes3D
        return Shapes3D()
    from training.procedural.digits import Digits
    return Digits()
