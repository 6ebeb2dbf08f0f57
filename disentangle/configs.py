"""The `--cfg` presets this plug-in adds to train.py (`CONFIGS`: name -> function(c, opts, training_set)).

Each method module of the package registers its own presets by defining a module-level
`TRAIN_CONFIGS = {name: function}`; this module collects them from every sibling module, so a new
method (InfoGAN, StyleGenes, ...) adds presets by adding its own file, without editing this one or
another method's. A preset edits train.py's config EasyDict `c` like train.py's
`_configure_stylegan2` and returns dict(cbase=..., cmax=...) defaults. A preset may list the
train.py options it reads as `function.options`; train.py rejects those options with other presets.
"""

import importlib
import pkgutil

import disentangle

_SKIP = {'configs'}


def collect_configs():
    """name -> preset function, from the `TRAIN_CONFIGS` of every module of the package."""
    found = {}
    owners = {}
    for info in sorted(pkgutil.iter_modules(disentangle.__path__), key=lambda m: m.name):
        if info.name in _SKIP or info.name.startswith('_') or info.ispkg:
            continue
        module = importlib.import_module(f'disentangle.{info.name}')
        for name, function in getattr(module, 'TRAIN_CONFIGS', {}).items():
            if name in found:
                raise RuntimeError(f'--cfg={name} is registered twice, by disentangle.{owners[name]} and '
                                   f'disentangle.{info.name}; rename one of them.')
            found[name] = function
            owners[name] = info.name
    return found


CONFIGS = collect_configs()
