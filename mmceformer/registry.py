"""Registration in the MODELS registries of mmpretrain and mmdet.

Every model class of this package is registered in mmpretrain's registry
(mmpretrain is required: the backbones subclass it) and, when mmdet imports,
in mmdet's too, so that ``type='CEFormer'`` builds in a config of either
toolbox without a scope prefix. ``import mmdet`` raises AssertionError, not
ImportError, when the installed mmcv is outside its range; both mean
"no detection" and are reported once as a warning.
"""
import warnings

from mmpretrain.registry import MODELS as PRETRAIN_MODELS

try:
    from mmdet.registry import MODELS as DET_MODELS
    DET_IMPORT_ERROR = None
except (ImportError, AssertionError) as error:  # pragma: no cover
    DET_MODELS = None
    DET_IMPORT_ERROR = error
    warnings.warn(f'mmdet could not be imported ({error!r}); mmceformer '
                  'models are registered for mmpretrain only')


def register_model(cls):
    """Class decorator: register ``cls`` under its own name in mmpretrain's
    and (if available) mmdet's ``MODELS``."""
    PRETRAIN_MODELS.register_module(module=cls)
    if DET_MODELS is not None:
        DET_MODELS.register_module(module=cls)
    return cls
