"""The math of E-Attention in plain torch (no OpenMMLab import)."""
from .e_attention import e_attention
from .linear_attention import (FEATURE_MAPS, POS_WEIGHTS, check_choice,
                               feature_map_fn, is_tracing, linear_attention,
                               linear_attention_reference, position_features)
from .pos_embed import (SEPARABLE_MODES, interpolation_matrix,
                        separable_resize_pos_embed)
from .stem import conv_stem_in_bands, stem_band_rows, stem_sizes
from .token_sampling import (KERNELS, SCORES, SELECTS, TRAIN_DRAWS,
                             check_keep_ratio, cls_attention_scores,
                             grid_inverse_cdf, num_kept_tokens, sample_tokens,
                             systematic_inverse_cdf)
from .tokens import (GridBuffer, gather_tokens, grid_to_tokens,
                     groups_from_block_mask, mask_to_index, place_tokens,
                     scatter_tokens, tokens_to_grid, with_prefix)

__all__ = [
    'FEATURE_MAPS', 'POS_WEIGHTS', 'check_choice', 'KERNELS', 'SCORES',
    'SELECTS', 'feature_map_fn', 'position_features', 'linear_attention',
    'linear_attention_reference', 'cls_attention_scores', 'e_attention',
    'sample_tokens', 'num_kept_tokens', 'check_keep_ratio', 'gather_tokens',
    'scatter_tokens', 'place_tokens', 'tokens_to_grid', 'grid_to_tokens',
    'mask_to_index', 'groups_from_block_mask', 'with_prefix', 'is_tracing',
    'grid_inverse_cdf', 'systematic_inverse_cdf', 'TRAIN_DRAWS', 'GridBuffer',
    'SEPARABLE_MODES', 'interpolation_matrix', 'separable_resize_pos_embed',
    'conv_stem_in_bands', 'stem_band_rows', 'stem_sizes'
]
