"""mmceformer: E-Attention and CEFormer backbones for mmpretrain and mmdet.

Importing the package registers its models in the ``MODELS`` registries of
mmpretrain and (when importable) mmdet, makes mmengine checkpoints
loadable with torch's safe ``weights_only`` loader, and lets configs
inherit the shipped ones as ``_base_ = ['mmceformer::NAME.py']``.
"""
from .utils import allow_mmengine_checkpoints, register_config_package
from .version import __version__

allow_mmengine_checkpoints()
register_config_package()

from . import datasets, models  # noqa: E402,F401  (registers the models)

__all__ = ['__version__']
