from mmceformer.registry import register_model
from .backbones import CEFormer, EAttentionSwin, EAttentionViT
from .layers import EAttention, SimplePyramid

# The building blocks can be built from configs too.
register_model(EAttention)
register_model(SimplePyramid)

__all__ = [
    'CEFormer', 'EAttentionViT', 'EAttentionSwin', 'EAttention',
    'SimplePyramid'
]
