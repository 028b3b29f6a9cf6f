from .activations import InferenceInPlaceGELU, gelu_in_place_in_ffns
from .e_attention import ATTN_MODES, PRUNE_MODES, EAttention, EAttentionOutput
from .simple_pyramid import SimplePyramid
from .token_block import Tokens, attention_block

__all__ = [
    'ATTN_MODES', 'PRUNE_MODES', 'EAttention', 'EAttentionOutput',
    'SimplePyramid', 'Tokens', 'attention_block', 'InferenceInPlaceGELU',
    'gelu_in_place_in_ffns'
]
