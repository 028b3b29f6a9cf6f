"""Small settings for tests and smoke checks (as ``mmdet.testing``)."""
from mmceformer.models.layers.e_attention import ATTN_MODES

#: Backbone options that shrink each registered backbone to a few blocks
#: of a few channels, for 64x64 inputs; every other option keeps its value.
TINY_BACKBONES = {
    'EAttentionViT':
    dict(
        arch=dict(
            embed_dims=48, num_layers=4, num_heads=3, feedforward_channels=96),
        img_size=64),
    'CEFormer':
    dict(
        arch=dict(embed_dims=48, depth=4, num_heads=2, stem_channels=16),
        img_size=64),
    'EAttentionSwin':
    dict(
        arch=dict(embed_dims=16, depths=[1, 1, 2, 1], num_heads=[1, 1, 2, 2]),
        img_size=64,
        window_size=4,
        pad_small_map=True),
}

#: (backbone, attn_mode, extra options): every registered backbone in every
#: mode, plus the options that take another eval path (Swin's whole-stage
#: attention, linear modes only), for checks that must cover all of them.
BACKBONE_VARIANTS = [(name, mode, {}) for name in sorted(TINY_BACKBONES)
                     for mode in ATTN_MODES] + [
                         ('EAttentionSwin', mode, dict(attn_scope='stage'))
                         for mode in ('linear', 'eattn')
                     ]
