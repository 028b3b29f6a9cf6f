"""DeiT / ViT with E-Attention (thesis tables 3-4, 3-5, 3-6)."""
from typing import Optional, Sequence

import numpy as np
import torch
from mmpretrain.models.backbones import VisionTransformer

from mmceformer.ops import separable_resize_pos_embed, tokens_to_grid
from mmceformer.registry import register_model
from ..layers import (EAttention, SimplePyramid, Tokens, attention_block,
                      gelu_in_place_in_ffns)


def resolve_prune_layers(prune_layers: Optional[Sequence[int]],
                         num_layers: int,
                         default_start: int = 3):
    """Block indices that sample tokens; default every block from the
    4th on (index 3), as ATS does. Negative indices count from the end."""
    if prune_layers is None:
        return list(range(default_start, num_layers))
    resolved = []
    for index in prune_layers:
        if not -num_layers <= index < num_layers:
            raise ValueError(f'prune_layers entries must be in '
                             f'[{-num_layers}, {num_layers}), got {index}')
        resolved.append(index % num_layers)
    return sorted(set(resolved))


@register_model
class EAttentionViT(VisionTransformer):
    """mmpretrain's ``VisionTransformer`` (ViT/DeiT, every ``arch``) with each
    layer's attention replaced by :class:`EAttention`.

    The ``state_dict`` keys are exactly mmpretrain's, so an official DeiT
    checkpoint converted by mmpretrain loads with ``strict=True``; with
    ``attn_mode='softmax'`` the outputs are mmpretrain's.

    Args:
        attn_mode (str): ``'softmax'``, ``'linear'``, ``'prune'`` or
            ``'eattn'`` (see :class:`EAttention`).
        keep_ratio (float): in (0, 1], share of the original image tokens
            drawn at each pruning layer (thesis: 0.7).
        prune_layers (Sequence[int] | None): blocks that sample tokens;
            default every block from the 4th on.
        score (str): ``'cls'``, ``'cls_v'``, ``'all'`` or ``'random'``.
        select (str): ``'inverse_cdf'`` or ``'topk'``.
        train_draws (str): ``'systematic'`` or ``'independent'``, the random
            draws of training (see :class:`EAttention`).
        prune_mode (str): ``'drop'`` (classification) or ``'skip'`` (dense
            outputs: every map is the full grid).
        feature_map (str): ``'elu1'`` or ``'identity'`` (linear kernel).
        pos_weight (str | None): ``'1d'``, ``'2d'`` or None (linear kernel).
        out_type (str): mmpretrain's ``'cls_token'``, ``'featmap'``,
            ``'avg_featmap'``, ``'raw'``, or ``'pyramid'``: four maps at
            strides 4/8/16/32 from the last layer through a
            :class:`SimplePyramid`, for mmdet (channels C/4, C/2, C, C).
            With ``prune_mode='drop'`` the cells of dropped tokens are zero
            in ``'featmap'``/``'pyramid'``; ``'skip'`` keeps every cell.
            Both return contiguous NCHW maps (mmcv's RoIAlign reads
            memory as NCHW).
        pyramid_levels (Sequence[int]): strides (4, 8, 16, 32) that
            ``'pyramid'`` returns, by index; ``(1, 2, 3)`` for Deformable
            DETR.
        **kwargs: the arguments of mmpretrain's ``VisionTransformer``.

    Shapes: input (B, 3, H, W); ``'cls_token'`` -> (B, C), ``'featmap'`` ->
    (B, C, H/16, W/16), ``'pyramid'`` -> 4 maps (B, C_l, H/s, W/s).
    """
    OUT_TYPES = VisionTransformer.OUT_TYPES | {'pyramid'}

    def __init__(self,
                 *args,
                 attn_mode: str = 'softmax',
                 keep_ratio: float = 0.7,
                 prune_layers: Optional[Sequence[int]] = None,
                 score: str = 'cls',
                 select: str = 'inverse_cdf',
                 train_draws: str = 'systematic',
                 prune_mode: str = 'drop',
                 feature_map: str = 'elu1',
                 pos_weight: Optional[str] = '1d',
                 out_type: str = 'cls_token',
                 pyramid_levels: Sequence[int] = (0, 1, 2, 3),
                 **kwargs):
        # out_type is checked by VisionTransformer against OUT_TYPES, with
        # its exception type, as for every other argument it takes.
        super().__init__(*args, out_type=out_type, **kwargs)
        self.attn_mode = attn_mode
        self.prune_layers = resolve_prune_layers(prune_layers, self.num_layers)
        prunes = attn_mode in ('prune', 'eattn') and self.prune_layers
        if prunes and prune_mode == 'drop' and out_type == 'raw':
            raise ValueError(
                "out_type='raw' returns the token sequence, whose length "
                "changes with prune_mode='drop': use prune_mode='skip' or "
                "another out_type")
        for i, layer in enumerate(self.layers):
            old = layer.attn
            if getattr(old, 'v_shortcut', False) or \
                    old.input_dims != old.embed_dims:
                raise ValueError('EAttentionViT supports attention layers '
                                 'without v_shortcut and with input_dims '
                                 '== embed_dims')
            attn = EAttention(
                self.embed_dims,
                old.num_heads,
                qkv_bias=old.qkv.bias is not None,
                attn_drop=old.attn_drop,
                proj_drop=old.proj_drop.p,
                attn_mode=attn_mode,
                prune_tokens=i in self.prune_layers,
                keep_ratio=keep_ratio,
                score=score,
                select=select,
                train_draws=train_draws,
                eval_seed=i,
                prune_mode=prune_mode,
                feature_map=feature_map,
                pos_weight=pos_weight,
                num_prefix_tokens=self.num_extra_tokens)
            # mmpretrain's layer scale and drop path, under their names.
            attn.gamma1 = old.gamma1
            attn.out_drop = old.out_drop
            layer.attn = attn
        # mmpretrain gives mmcv's DropPath numpy floats (np.linspace); a
        # branch on one is a torch.compile graph break in every block.
        for module in self.modules():
            if isinstance(getattr(module, 'drop_prob', None), np.floating):
                module.drop_prob = float(module.drop_prob)
        if self.frozen_stages > 0:  # mmpretrain froze the replaced layers
            self._freeze_stages()
        # the FFNs' GELU overwrites the fc1 output in inference (exact)
        gelu_in_place_in_ffns(self)
        if out_type == 'pyramid':
            if len(self.out_indices) != 1:
                raise ValueError("out_type='pyramid' builds on one layer: "
                                 'out_indices must have one entry, got '
                                 f'{self.out_indices}')
            self.pyramid = SimplePyramid(self.embed_dims, pyramid_levels)
        #: image tokens that each layer processed (the kept ones), (B,)
        #: each; filled by ``forward`` for statistics and tests.
        self.token_counts = []

    def forward(self, x):
        batch = x.shape[0]
        x, patch_resolution = self.patch_embed(x)  # (B, Hg * Wg, C)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(batch, -1, -1), x), dim=1)
        # mmpretrain's resize_pos_embed, as two matrix products
        x = x + separable_resize_pos_embed(
            self.pos_embed,
            self.patch_resolution,
            patch_resolution,
            mode=self.interpolate_mode,
            num_extra_tokens=self.num_extra_tokens)
        x = self.pre_norm(self.drop_after_pos(x))

        tokens = Tokens.full(x)
        seq_len = x.shape[1]
        self.token_counts = []
        outs = []
        for i, layer in enumerate(self.layers):
            tokens = attention_block(
                tokens,
                layer.attn,
                layer.ln1,
                None,  # attn applies its gamma1 and out_drop
                lambda t, _, layer=layer: layer.ffn(
                    layer.ln2(t.x), identity=t.x),
                seq_len=seq_len,
                grid_size=patch_resolution)
            self.token_counts.append(tokens.processed)
            if i == len(self.layers) - 1 and self.final_norm:
                tokens = tokens._replace(x=self.ln1(tokens.x))
            if i in self.out_indices:
                outs.append(self._format_tokens(tokens, patch_resolution))
        if self.out_type == 'pyramid':
            return outs[0]  # the 4 maps, as mmdet necks expect
        return tuple(outs)

    def _format_tokens(self, tokens: Tokens, hw):
        prefix = self.num_extra_tokens
        if self.out_type == 'avg_featmap' and tokens.mask is not None:
            weight = tokens.mask[:, prefix:, None].to(tokens.x.dtype)
            mean = (tokens.x[:, prefix:] * weight).sum(1) / weight.sum(1)
            return self.ln2(mean)
        if self.out_type in ('featmap', 'pyramid'):
            # (B, N, C) -> (B, C, Hg, Wg), zero where tokens were dropped
            grid = tokens_to_grid(tokens.x, tokens.pos, tokens.mask, prefix,
                                  hw)
            if self.out_type == 'pyramid':
                return self.pyramid(grid)
            # contiguous NCHW, as the pyramid's maps: mmcv's RoIAlign reads
            # memory as NCHW whatever the strides (docs/changelog.md)
            return grid.contiguous()
        return self._format_output(tokens.x, hw)
