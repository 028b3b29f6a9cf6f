"""Registry names of earlier releases, kept for one release.

``EViT`` is the name of another method of this field (Liang et al., ICLR
2022, token reorganisation), so the E-Attention ViT is ``EAttentionViT``
now, and the Swin with E-Attention ``EAttentionSwin`` for the same reason
of clarity. Configs that still say ``type='EViT'`` or
``type='ESwinTransformer'`` build the new classes, with a warning.
"""
import warnings

from mmceformer.registry import register_model
from .eattention_swin import EAttentionSwin
from .eattention_vit import EAttentionViT

#: old registry name -> the class it now builds
DEPRECATED_NAMES = {}


def _deprecated_alias(old_name: str, cls: type) -> type:
    """A subclass of ``cls`` registered as ``old_name`` that warns once per
    build (FutureWarning: shown to config users, not only developers)."""

    def __init__(self, *args, **kwargs):
        warnings.warn(
            f"type='{old_name}' is deprecated and will be removed in the "
            f"next release: use type='{cls.__name__}' (the same model)",
            FutureWarning,
            stacklevel=2)
        cls.__init__(self, *args, **kwargs)

    alias = type(old_name, (cls, ), {
        '__init__': __init__,
        '__doc__': f'Deprecated name of :class:`{cls.__name__}`.',
        '__module__': __name__,
    })
    DEPRECATED_NAMES[old_name] = cls
    return register_model(alias)


EViT = _deprecated_alias('EViT', EAttentionViT)
ESwinTransformer = _deprecated_alias('ESwinTransformer', EAttentionSwin)
