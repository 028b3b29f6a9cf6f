from .e_attention import ATTN_MODES, PRUNE_MODES, EAttention, EAttentionOutput
from .simple_pyramid import SimplePyramid
from .token_block import Tokens, attention_block

__all__ = [
    'ATTN_MODES', 'PRUNE_MODES', 'EAttention', 'EAttentionOutput',
    'SimplePyramid', 'Tokens', 'attention_block'
]
