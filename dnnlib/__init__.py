"""dnnlib: configuration and I/O helpers with the interface of StyleGAN2-ADA's package of the same name."""

from . import util
from .util import EasyDict, make_cache_dir_path

__all__ = ['EasyDict', 'make_cache_dir_path', 'util']
