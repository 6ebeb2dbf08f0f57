"""VAE objectives (beta-VAE, beta-TCVAE, FactorVAE, ...): one module per objective, found by name.

Every module of this package that defines a subclass of `base.VAEObjective` decorated with
`@register('<cfg name>')` becomes `train.py --cfg=<cfg name>`; adding an objective is adding one
file here. The registry imports the package's modules on first use, so nothing else lists them.
"""

import importlib
import pkgutil

_registry = {}       # cfg name -> objective class
_discovered = False


def register(name):
    """Class decorator: make an objective available as `--cfg=<name>`."""
    def decorator(cls):
        if name in _registry and _registry[name] is not cls:
            raise ValueError(f'VAE objective name {name!r} is registered twice ({_registry[name].__module__} '
                             f'and {cls.__module__}); rename one of them.')
        cls.cfg_name = name
        _registry[name] = cls
        return cls
    return decorator


def _discover():
    global _discovered
    if not _discovered:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f'{__name__}.{module.name}')
        _discovered = True


def names():
    """The registered objective (config) names, sorted."""
    _discover()
    return sorted(_registry)


def get(name):
    """The objective class registered under `name`; KeyError names the valid choices."""
    _discover()
    if name not in _registry:
        raise KeyError(f'unknown VAE objective {name!r}; choose one of: {", ".join(sorted(_registry))}.')
    return _registry[name]


def class_name(name):
    """The `class_name` for construct_class_by_name of the objective registered under `name`."""
    cls = get(name)
    return f'{cls.__module__}.{cls.__qualname__}'
