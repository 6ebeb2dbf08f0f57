"""The `--cfg` presets (`CONFIGS`) and `--mapping` choices (`MAPPINGS`) this plug-in adds to train.py.

Each method module of the package registers its own presets by defining a module-level
`TRAIN_CONFIGS = {name: function}`; this module collects them from every sibling module, so a new
method (InfoGAN, StyleGenes, ...) adds presets by adding its own file, without editing this one or
another method's. A preset edits train.py's config EasyDict `c` like
`training.options.configure_stylegan2` and returns dict(cbase=..., cmax=...) defaults. A preset may list the
train.py options it reads as `function.options`; train.py rejects those options with other presets.

Mapping choices work the same way through a module-level `TRAIN_MAPPINGS = {name: function}`
(e.g. `--mapping=genes` from stylegenes.py): train.py calls the function after the preset, with
the same arguments; it replaces the mapping network (seam 2) and, if it needs to, the sampler.
"""

import importlib
import pkgutil

import disentangle

_SKIP = {'configs'}


def collect_configs(attribute='TRAIN_CONFIGS', option='--cfg'):
    """name -> preset function, from the `attribute` dict of every module of the package."""
    found = {}
    owners = {}
    for info in sorted(pkgutil.iter_modules(disentangle.__path__), key=lambda m: m.name):
        if info.name in _SKIP or info.name.startswith('_') or info.ispkg:
            continue
        module = importlib.import_module(f'disentangle.{info.name}')
        for name, function in getattr(module, attribute, {}).items():
            if name in found:
                raise RuntimeError(f'{option}={name} is registered twice, by disentangle.{owners[name]} and '
                                   f'disentangle.{info.name}; rename one of them.')
            found[name] = function
            owners[name] = info.name
    return found


CONFIGS = collect_configs()
MAPPINGS = collect_configs('TRAIN_MAPPINGS', '--mapping')
