"""Swin Transformer with E-Attention inside the windows (SPEC 2.4)."""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmpretrain.models.backbones import SwinTransformer
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor

from mmceformer.ops import (check_choice, gather_tokens,
                            groups_from_block_mask, mask_to_index,
                            scatter_tokens)
from mmceformer.registry import register_model
from ..layers import EAttention, EAttentionOutput
from .e_vit import resolve_prune_layers


class EWindowAttention(EAttention):
    """:class:`EAttention` over the tokens of one window, with the
    parameters of mmpretrain's ``WindowMSA`` (``qkv``, ``proj``,
    ``relative_position_bias_table`` and the ``relative_position_index``
    buffer), so Swin checkpoints load unchanged.

    Softmax modes add the relative position bias and the shift mask as
    ``attn_bias``. Linear modes cannot take the bias (it stays in the state
    dict, unused, SPEC 2.4); the shift mask, which only separates regions of
    a shifted window, becomes group ids, which the linear kernel honours
    exactly. Positions are the raster index within the window. There is no
    CLS token: a window's tokens are scored by the mean query.
    """

    def __init__(self, embed_dims: int, window_size: Sequence[int],
                 num_heads: int, **kwargs):
        super().__init__(embed_dims, num_heads, num_prefix_tokens=0, **kwargs)
        self.window_size = tuple(window_size)
        wh, ww = self.window_size
        self.relative_position_bias_table = torch.nn.Parameter(
            torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        self.register_buffer(
            'relative_position_index',
            torch.zeros(1, wh * ww * wh * ww, dtype=torch.long))

    @classmethod
    def from_window_msa(cls, window_msa, **kwargs) -> 'EWindowAttention':
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
                        mask: Optional[Tensor] = None) -> EAttentionOutput:
        """
        Args:
            x (Tensor): (B * W, N, C) window tokens, N = window area.
            mask (Tensor | None): (W, N, N) shift mask, 0 or negative.

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
                x, grid_size=self.window_size, attn_bias=bias)
        group = None
        if mask is not None:
            group = groups_from_block_mask(mask)  # (W, N)
            group = group.repeat(windows // mask.shape[0], 1)  # (B * W, N)
        return super().forward(
            x, grid_size=self.window_size, token_group=group)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """``WindowMSA``'s interface: (B * W, N, C) -> (B * W, N, C); rows of
        tokens not kept (pruning layers) are 0, i.e. they skip attention."""
        out = self.forward_windows(x, mask)
        if out.index is None:
            return out.x
        return scatter_tokens(torch.zeros_like(x), out.index, out.x, out.mask)


@register_model
class ESwinTransformer(SwinTransformer):
    """mmpretrain's ``SwinTransformer`` with :class:`EWindowAttention` in
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
        prune_mode (str): only ``'skip'``: pruned tokens skip the block
            (attention and FFN) and stay, so every map stays dense.
        feature_map (str): ``'elu1'`` or ``'identity'``.
        pos_weight (str | None): ``'1d'``, ``'2d'`` (within the window) or
            None.
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
                 prune_mode: str = 'skip',
                 feature_map: str = 'elu1',
                 pos_weight: Optional[str] = '1d',
                 **kwargs):
        check_choice('prune_mode', prune_mode, ('skip', ))
        super().__init__(*args, **kwargs)
        self.attn_mode = attn_mode
        blocks = [block for stage in self.stages for block in stage.blocks]
        depths = [len(stage.blocks) for stage in self.stages]
        self.prune_layers = resolve_prune_layers(
            prune_layers, len(blocks), default_start=sum(depths[:2]))
        for i, block in enumerate(blocks):
            block.attn.w_msa = EWindowAttention.from_window_msa(
                block.attn.w_msa,
                attn_mode=attn_mode,
                prune_tokens=i in self.prune_layers,
                keep_ratio=keep_ratio,
                score=score,
                select=select,
                prune_mode=prune_mode,
                feature_map=feature_map,
                pos_weight=pos_weight)
        #: kept tokens per sample after each block, (B,) each
        self.token_counts = []

    def forward(self, x):
        x, hw_shape = self.patch_embed(x)  # (B, H/4 * W/4, C)
        if self.use_abs_pos_embed:
            x = x + resize_pos_embed(
                self.absolute_pos_embed, self.patch_resolution, hw_shape,
                self.interpolate_mode, self.num_extra_tokens)
        x = self.drop_after_pos(x)
        self.token_counts = []
        outs = []
        for i, stage in enumerate(self.stages):
            for block in stage.blocks:
                if block.attn.w_msa.prune_tokens:
                    x = self._pruned_block(block, x, hw_shape)
                else:
                    x = block(x, hw_shape)
                    self.token_counts.append(
                        torch.full((x.shape[0], ), x.shape[1],
                                   device=x.device))
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

    def _pruned_block(self, block, x: Tensor, hw_shape) -> Tensor:
        """A SwinBlock in which only the sampled tokens of each window are
        updated; the others skip attention and FFN (identity)."""
        attn_out, keep = self._window_attention(block.attn, block.norm1(x),
                                                hw_shape)
        x = x + block.attn.drop(attn_out)  # 0 on skipped tokens
        index, valid = mask_to_index(keep)  # (B, K) kept tokens
        kept = gather_tokens(x, index)
        kept = block.ffn(block.norm2(kept), identity=kept)
        self.token_counts.append(keep.sum(-1))
        return scatter_tokens(x, index, kept, valid)

    @staticmethod
    def _window_attention(shift_msa, x: Tensor, hw_shape):
        """``ShiftWindowMSA.forward`` that also returns which tokens each
        window kept: (B, L, C) -> (B, L, C) outputs (0 where not kept) and a
        (B, L) bool map of the kept tokens."""
        batch, length, channels = x.shape
        height, width = hw_shape
        window = shift_msa.window_size
        shift = shift_msa.shift_size
        if min(height, width) == window:
            shift = shift if shift_msa.pad_small_map else 0
        elif min(height, width) < window and not shift_msa.pad_small_map:
            raise ValueError(
                f'The input shape ({height}, {width}) is smaller than the '
                f'window size ({window}): set pad_small_map=True')
        x = x.view(batch, height, width, channels)
        pad_r = (window - width % window) % window
        pad_b = (window - height % window) % window
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        padded_h, padded_w = x.shape[1], x.shape[2]
        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        attn_mask = shift_msa.get_attn_mask((padded_h, padded_w),
                                            window_size=window,
                                            shift_size=shift,
                                            device=x.device)
        # (B, Hp, Wp, C) -> (B * W, window^2, C)
        windows = shift_msa.window_partition(x, window).view(
            -1, window**2, channels)
        result = shift_msa.w_msa.forward_windows(windows, mask=attn_mask)
        # (B * W, N) kept map; padding entries (index 0, mask False) add 0,
        # so they cannot unset a kept token 0.
        kept = torch.zeros(
            windows.shape[:2], dtype=torch.long,
            device=x.device).scatter_add(1, result.index,
                                         result.mask.long()) > 0
        out = scatter_tokens(
            torch.zeros_like(windows), result.index, result.x, result.mask)
        # Outputs and the kept map (one more channel) back to the image.
        merged = torch.cat([out, kept[..., None].to(out.dtype)], dim=-1)
        merged = shift_msa.window_reverse(
            merged.view(-1, window, window, channels + 1), padded_h, padded_w,
            window)  # (B, Hp, Wp, C + 1)
        if shift > 0:
            merged = torch.roll(merged, shifts=(shift, shift), dims=(1, 2))
        merged = merged[:, :height, :width].reshape(batch, length,
                                                    channels + 1)
        return merged[..., :channels], merged[..., channels] > 0.5
