from .ceformer import CEFormer
from .deprecated import DEPRECATED_NAMES, ESwinTransformer, EViT
from .eattention_swin import EAttentionSwin, WindowEAttention
from .eattention_vit import EAttentionViT

__all__ = [
    'CEFormer', 'EAttentionViT', 'EAttentionSwin', 'WindowEAttention',
    'DEPRECATED_NAMES', 'EViT', 'ESwinTransformer'
]
