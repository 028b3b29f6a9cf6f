from .ceformer import CEFormer
from .e_swin import ESwinTransformer, EWindowAttention
from .e_vit import EViT

__all__ = ['CEFormer', 'EViT', 'ESwinTransformer', 'EWindowAttention']
