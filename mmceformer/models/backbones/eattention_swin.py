"""Swin Transformer with E-Attention inside the windows (SPEC 2.4)."""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones import SwinTransformer
from torch import Tensor, nn

from mmceformer.ops import (check_choice, gather_tokens,
                            groups_from_block_mask, is_tracing, mask_to_index,
                            place_tokens, scatter_tokens,
                            separable_resize_pos_embed)
from mmceformer.registry import register_model
from ..layers import EAttention, EAttentionOutput, gelu_in_place_in_ffns
from ..layers.e_attention import ATTN_MODES
from .eattention_vit import resolve_prune_layers

#: Where the attention of a block looks (``EAttentionSwin.attn_scope``).
ATTN_SCOPES = ('window', 'stage')


class WindowEAttention(EAttention):
    """:class:`EAttention` over the tokens of one window, with the
    parameters of mmpretrain's ``WindowMSA`` (``qkv``, ``proj``,
    ``relative_position_bias_table`` and the ``relative_position_index``
    buffer), so Swin checkpoints load unchanged.

    Softmax modes add the relative position bias and the shift mask as
    ``attn_bias``. Linear modes cannot take the bias (SPEC 2.4): it stays in
    the state dict so checkpoints load, and is frozen (``requires_grad``
    False) so that DDP with ``find_unused_parameters=False`` does not wait
    for a gradient that never comes. The shift mask, which only separates
    regions of a shifted window, becomes group ids, which the linear kernel
    honours exactly. Positions are the raster index within the window. There
    is no CLS token: a window's tokens are scored by the mean query.

    The module tree is WindowMSA's (``attn_drop`` an ``nn.Dropout``, a
    ``softmax`` module); drop path stays in ``ShiftWindowMSA.drop``.
    """

    #: Regions of the shift mask in one window: the shift is smaller than
    #: the window, so a window straddles at most one region boundary per
    #: axis (``groups_from_block_mask`` numbers them from 0 per window).
    MAX_REGIONS = 4

    def __init__(self, embed_dims: int, window_size: Sequence[int],
                 num_heads: int, **kwargs):
        attn_drop = kwargs.pop('attn_drop', 0.)
        # Static slots always: the block compacts the kept tokens of all
        # windows of an image at once (one host sync per block).
        super().__init__(
            embed_dims,
            num_heads,
            num_prefix_tokens=0,
            attn_drop=attn_drop,
            static_shapes=True,
            **kwargs)
        self.window_size = tuple(window_size)
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads),
            requires_grad=self.kernel == 'softmax')
        self.register_buffer(
            'relative_position_index',
            torch.zeros(1, wh * ww * wh * ww, dtype=torch.long))
        self.attn_drop = nn.Dropout(attn_drop)
        self.softmax = nn.Softmax(dim=-1)
        self.out_drop = self.gamma1 = None  # ShiftWindowMSA.drop does it

    def init_weights(self):
        """As WindowMSA: the bias table from a truncated normal."""
        super().init_weights()
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    @classmethod
    def from_window_msa(cls, window_msa, **kwargs) -> 'WindowEAttention':
        """Take shapes, options and the position index of a ``WindowMSA``."""
        attn = cls(
            window_msa.embed_dims,
            window_msa.window_size,
            window_msa.num_heads,
            qkv_bias=window_msa.qkv.bias is not None,
            qk_scale=window_msa.scale,
            attn_drop=window_msa.attn_drop.p,
            proj_drop=window_msa.proj_drop.p,
            **kwargs)
        attn.relative_position_index = window_msa.relative_position_index
        return attn

    def relative_bias(self) -> Tensor:
        """(1, H, N, N) relative position bias of the window."""
        num = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[
            self.relative_position_index.view(-1)].view(num, num, -1)
        return bias.permute(2, 0, 1).unsqueeze(0)

    def forward_windows(self,
                        x: Tensor,
                        mask: Optional[Tensor] = None,
                        sample_mask: Optional[Tensor] = None
                        ) -> EAttentionOutput:
        """
        Args:
            x (Tensor): (B * W, N, C) window tokens, N = window area.
            mask (Tensor | None): (W, N, N) shift mask, 0 or negative.
            sample_mask (Tensor | None): (B * W, N) bool, False on padded
                cells: they stay keys of the attention, as in mmpretrain's
                windows, but are never drawn nor part of the mean query.

        Returns:
            EAttentionOutput: outputs and, on pruning layers, the kept
            tokens of each window (indices within the window).
        """
        windows, num, _ = x.shape
        if self.kernel == 'softmax':
            bias = self.relative_bias()  # (1, H, N, N)
            if mask is not None:
                # (1, W, H, N, N) -> (B, W, H, N, N) -> (B * W, H, N, N)
                bias = bias.unsqueeze(0) + mask[None, :, None]
                bias = bias.expand(windows // mask.shape[0], -1, -1, -1,
                                   -1).reshape(windows, self.num_heads, num,
                                               num)
            return super().forward(
                x,
                grid_size=self.window_size,
                attn_bias=bias,
                sample_mask=sample_mask)
        group = None
        if mask is not None:
            group = groups_from_block_mask(mask)  # (W, N)
            group = group.repeat(windows // mask.shape[0], 1)  # (B * W, N)
        return super().forward(
            x,
            grid_size=self.window_size,
            token_group=group,
            num_groups=self.MAX_REGIONS,
            sample_mask=sample_mask)

    def forward_map(self, x: Tensor, hw_shape) -> EAttentionOutput:
        """Attention over every token of a whole map, no windows
        (``attn_scope='stage'``, linear kernel only).

        Args:
            x (Tensor): (B, H * W, C) tokens of the map, raster order.
            hw_shape (tuple[int, int]): (H, W). Positions are the raster
                index in the map (``'1d'``, M = H * W) or its row and column
                (``'2d'``).

        Returns:
            EAttentionOutput: outputs and, on pruning layers, the kept
            tokens (indices into the map).
        """
        if self.kernel != 'linear':
            raise ValueError('forward_map needs the linear kernel (its cost '
                             'is linear in the map size), got attn_mode='
                             f'{self.attn_mode!r}')
        return super().forward(x, grid_size=tuple(hw_shape))

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """``WindowMSA``'s interface: (B * W, N, C) -> (B * W, N, C); rows of
        tokens not kept (pruning layers) are 0, i.e. they skip attention."""
        out = self.forward_windows(x, mask)
        if out.index is None:
            return out.x
        return place_tokens(out.index, out.x, out.mask, x.shape[1], x.dtype)


@register_model
class EAttentionSwin(SwinTransformer):
    """mmpretrain's ``SwinTransformer`` with :class:`WindowEAttention` in
    every block; ``state_dict`` keys are exactly mmpretrain's.

    Args:
        attn_mode (str): ``'softmax'``, ``'linear'``, ``'prune'``,
            ``'eattn'``.
        keep_ratio (float): share of each window's tokens drawn on pruning
            blocks (R = round(keep_ratio x window area)).
        prune_layers (Sequence[int] | None): global block indices (over all
            stages) that sample. Default: every block of the third and
            fourth stages. Swin's early windows cover a few pixels of
            low-level texture whose CLS-free scores say little, and the last
            two stages hold most of the blocks and FLOPs (18 of 24 blocks for
            Swin-S/B), as DeiT's later blocks do.
        score (str): ``'cls'`` (the mean query's attention), ``'cls_v'``,
            ``'all'``, ``'random'``.
        select (str): ``'inverse_cdf'`` or ``'topk'``.
        train_draws (str): ``'systematic'`` or ``'independent'``, the random
            draws of training (see :class:`EAttention`).
        prune_mode (str): only ``'skip'``: pruned tokens skip the block
            (attention and FFN) and stay, so every map stays dense.
        feature_map (str): ``'elu1'`` or ``'identity'``.
        pos_weight (str | None): ``'1d'``, ``'2d'`` (within the window, or
            the stage's map with ``attn_scope='stage'``) or None.
        attn_scope (str): ``'window'`` (default, the thesis's Swin):
            attention within Swin's (shifted) windows. ``'stage'``: each
            block attends over its stage's whole map, with no windows,
            shift or padding (linear modes only: the linear kernel's cost
            grows with the tokens, not with the window, so windows only add
            partition, shift and region bookkeeping; FLatten Transformer
            widens Swin's windows for the same reason). Maps smaller than
            the window need no ``pad_small_map``. Pruning blocks draw
            ``keep_ratio`` of the map's tokens from its mean query.
            Checkpoints load unchanged (the unused relative position bias
            stays in the state dict), but the receptive field differs from
            the windowed model's, so windowed weights need fine-tuning.
        **kwargs: the arguments of mmpretrain's ``SwinTransformer``.

    Input (B, 3, H, W); outputs as mmpretrain's: one (B, C_i, H/s, W/s) map
    per ``out_indices`` stage.
    """

    def __init__(self,
                 *args,
                 attn_mode: str = 'softmax',
                 keep_ratio: float = 0.7,
                 prune_layers: Optional[Sequence[int]] = None,
                 score: str = 'cls',
                 select: str = 'inverse_cdf',
                 train_draws: str = 'systematic',
                 prune_mode: str = 'skip',
                 feature_map: str = 'elu1',
                 pos_weight: Optional[str] = '1d',
                 attn_scope: str = 'window',
                 **kwargs):
        check_choice('prune_mode', prune_mode, ('skip', ))
        check_choice('attn_mode', attn_mode, ATTN_MODES)
        check_choice('attn_scope', attn_scope, ATTN_SCOPES)
        if attn_scope == 'stage' and attn_mode not in ('linear', 'eattn'):
            raise ValueError(
                "attn_scope='stage' needs a linear attn_mode ('linear' or "
                f"'eattn'), got attn_mode={attn_mode!r}: softmax attention "
                "over a whole stage costs O(N^2); use attn_scope='window'")
        super().__init__(*args, **kwargs)
        self.attn_mode = attn_mode
        self.attn_scope = attn_scope
        blocks = [block for stage in self.stages for block in stage.blocks]
        depths = [len(stage.blocks) for stage in self.stages]
        self.prune_layers = resolve_prune_layers(
            prune_layers, len(blocks), default_start=sum(depths[:2]))
        for i, block in enumerate(blocks):
            block.attn.w_msa = WindowEAttention.from_window_msa(
                block.attn.w_msa,
                attn_mode=attn_mode,
                prune_tokens=i in self.prune_layers,
                keep_ratio=keep_ratio,
                score=score,
                select=select,
                train_draws=train_draws,
                eval_seed=i,
                prune_mode=prune_mode,
                feature_map=feature_map,
                pos_weight=pos_weight)
        # the FFNs' GELU overwrites the fc1 output in inference (exact)
        gelu_in_place_in_ffns(self)
        #: kept tokens per sample after each block, (B,) each
        self.token_counts = []

    def forward(self, x):
        x, hw_shape = self.patch_embed(x)  # (B, H/4 * W/4, C)
        if self.use_abs_pos_embed:
            x = x + separable_resize_pos_embed(
                self.absolute_pos_embed, self.patch_resolution, hw_shape,
                self.interpolate_mode, self.num_extra_tokens)
        x = self.drop_after_pos(x)
        self.token_counts = []
        outs = []
        for i, stage in enumerate(self.stages):
            for block in stage.blocks:
                if (block.attn.w_msa.prune_tokens
                        or self.attn_scope == 'stage'):
                    x = self._own_block(block, x, hw_shape)
                else:
                    x = block(x, hw_shape)
                    self.token_counts.append(_all_kept(x))
            if stage.downsample is not None and self.out_after_downsample:
                x, hw_shape = stage.downsample(x, hw_shape)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(x)
                # (B, H * W, C) -> (B, C, H, W)
                outs.append(
                    out.view(-1, *hw_shape,
                             self.num_features[i]).permute(0, 3, 1,
                                                           2).contiguous())
            if stage.downsample is not None and not self.out_after_downsample:
                x, hw_shape = stage.downsample(x, hw_shape)
        return tuple(outs)

    def _own_block(self, block, x: Tensor, hw_shape) -> Tensor:
        """``SwinBlock.forward`` with this backbone's attention scope; on a
        pruning block only the sampled tokens (of each window, or of the
        map) are updated, the others skip attention and FFN (identity).
        Honours the block's ``with_cp`` as ``SwinBlock.forward`` does (the
        checkpoint replays the random draws: torch restores the RNG
        state)."""

        def inner_forward(x):
            if self.attn_scope == 'stage':
                attn_out, index, valid = self._stage_attention(
                    block.attn, block.norm1(x), hw_shape)
            else:
                attn_out, index, valid = self._window_attention(
                    block.attn, block.norm1(x), hw_shape)
            x = x + block.attn.drop(attn_out)  # 0 on skipped tokens
            if index is None:  # every token was kept
                return block.ffn(block.norm2(x), identity=x), _all_kept(x)
            kept = gather_tokens(x, index)  # (B, K, C)
            kept = block.ffn(block.norm2(kept), identity=kept)
            return scatter_tokens(x, index, kept, valid), valid.sum(-1)

        if block.with_cp and x.requires_grad:
            x, count = cp.checkpoint(inner_forward, x, use_reentrant=False)
        else:
            x, count = inner_forward(x)
        self.token_counts.append(count)
        return x

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              *args, **kwargs):
        """mmpretrain's conversions of older Swin checkpoints, which its
        class applies to itself only (``self.__class__ is
        SwinTransformer``): version < 2 saved the final norm as ``norm.*``,
        version < 3 saved the shift masks (``attn_mask``)."""
        version = local_metadata.get('version', None)
        if version is None or version < 2:
            last = f'{prefix}norm{len(self.stages) - 1}.'
            for key in list(state_dict):
                if key.startswith(f'{prefix}norm.'):
                    new_key = last + key[len(f'{prefix}norm.'):]
                    state_dict[new_key] = state_dict.pop(key)
        if version is None or version < 3:
            for key in list(state_dict):
                if key.startswith(prefix) and 'attn_mask' in key:
                    del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      *args, **kwargs)

    @staticmethod
    def _stage_attention(shift_msa, x: Tensor, hw_shape):
        """The block's attention over its whole map (``attn_scope='stage'``).

        Args and returns as :meth:`_window_attention`; ``index`` and
        ``valid`` are None when the block does not sample.
        """
        result = shift_msa.w_msa.forward_map(x, hw_shape)
        if result.index is None:
            return result.x, None, None
        out = place_tokens(result.index, result.x, result.mask, x.shape[1],
                           x.dtype)
        return (out, ) + _compacted(result.index, result.mask)

    @staticmethod
    def _window_attention(shift_msa, x: Tensor, hw_shape):
        """``ShiftWindowMSA.forward`` that also says which tokens the
        windows kept.

        Args:
            shift_msa (ShiftWindowMSA): the block's attention.
            x (Tensor): (B, L, C) normalised tokens, L = H * W.
            hw_shape (tuple[int, int]): (H, W).

        Returns:
            tuple[Tensor, Tensor, Tensor]: outputs (B, L, C), 0 where a token
            was not kept; ``index`` (B, K) long, the image positions of the
            kept tokens, and ``valid`` (B, K) bool, False on duplicate,
            padding and out-of-image entries. While tracing K is static
            (windows x R slots); in eager mode the entries are compacted.
        """
        batch, length, channels = x.shape
        height, width = hw_shape
        window = shift_msa.window_size
        shift = shift_msa.shift_size
        # mmpretrain's checks, with its exception types and messages, so
        # that every mode fails alike.
        assert length == height * width, f"The query length {length} " \
            f"doesn't match the input shape ({height}, {width})."
        if min(height, width) == window:
            shift = shift if shift_msa.pad_small_map else 0
        elif min(height, width) < window:
            assert shift_msa.pad_small_map, \
                f'The input shape ({height}, {width}) is smaller than the ' \
                f'window size ({window}). Please set `pad_small_map=True`, ' \
                'or decrease the `window_size`.'
        pad_r = (window - width % window) % window
        pad_b = (window - height % window) % window
        padded_h, padded_w = height + pad_b, width + pad_r
        # The image position of every padded cell (-1 outside the image),
        # moved through the same shift and partition as the tokens.
        cell = torch.arange(length, device=x.device).view(1, height, width, 1)
        cell = F.pad(cell, (0, 0, 0, pad_r, 0, pad_b), value=-1)
        x = F.pad(x.view(batch, height, width, channels),
                  (0, 0, 0, pad_r, 0, pad_b))
        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            cell = torch.roll(cell, shifts=(-shift, -shift), dims=(1, 2))
        attn_mask = shift_msa.get_attn_mask((padded_h, padded_w),
                                            window_size=window,
                                            shift_size=shift,
                                            device=x.device)
        # (B, Hp, Wp, C) -> (B * W, window^2, C); cells (W, window^2)
        windows = shift_msa.window_partition(x, window).view(
            -1, window**2, channels)
        cell = shift_msa.window_partition(cell, window).view(-1, window**2)
        sample_mask = None
        if pad_r or pad_b:  # (W, N) -> (B * W, N): real cells only
            sample_mask = (cell >= 0).repeat(batch, 1)
        result = shift_msa.w_msa.forward_windows(
            windows, mask=attn_mask, sample_mask=sample_mask)
        out = place_tokens(result.index, result.x, result.mask, window**2,
                           windows.dtype)
        out = shift_msa.window_reverse(
            out.view(-1, window, window, channels), padded_h, padded_w,
            window)  # (B, Hp, Wp, C)
        if shift > 0:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        out = out[:, :height, :width].reshape(batch, length, channels)
        # Kept slots of each window -> image positions, (B, W * K)
        index = cell.repeat(batch, 1).gather(1, result.index)
        valid = result.mask & (index >= 0)
        index = index.view(batch, -1).clamp(min=0)
        return (out, ) + _compacted(index, valid.view(batch, -1))


def _all_kept(x: Tensor) -> Tensor:
    """(B,) token counts of a block that kept all of (B, L, C) ``x``."""
    return torch.full((x.shape[0], ), x.shape[1], device=x.device)


def _compacted(index: Tensor, valid: Tensor):
    """(B, K) kept positions and validity -> the same with the valid
    entries first and fewer columns in eager mode (fewer rows for the FFN;
    one host sync), unchanged while tracing (static K); invalid entries
    point at token 0."""
    if not is_tracing():
        keep, valid = mask_to_index(valid)
        index = index.gather(1, keep)
    return index.masked_fill(~valid, 0), valid
