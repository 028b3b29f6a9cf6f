"""mmceformer: E-Attention and CEFormer backbones for mmpretrain and mmdet.

Importing the package registers its models in the ``MODELS`` registries of
mmpretrain and (when importable) mmdet, and makes mmengine checkpoints
loadable with torch's safe ``weights_only`` loader.
"""
from .utils import allow_mmengine_checkpoints
from .version import __version__

allow_mmengine_checkpoints()

from . import datasets, models  # noqa: E402,F401  (registers the models)

__all__ = ['__version__']
