"""Position-embedding resize as two small matrix products.

A ViT's position embedding is learnt on one token grid (14 x 14 at 224) and
resized to the input's grid at every forward (50 x 84 at 800x1344).
``F.interpolate(mode='bicubic')`` does it in one pass that computes sixteen
weights per output element: at 800x1344 it took 14 ms per DeiT-S forward on
2 CPU cores, 38x its memory bound (docs/benchmarks.md, roofline). Bilinear
and bicubic interpolation without antialiasing are separable: output
``(y, x)`` is ``sum_ij w_y[i] w_x[j] grid[i, j]``, so the resize is
``W_h @ grid @ W_w^T`` with ``W_h`` (H', H) and ``W_w`` (W', W) the 1-D
weights. The weights are taken from ``F.interpolate`` itself, applied to
identity matrices, so both agree by construction (to float rounding: the
sums are ordered differently).
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: modes whose 2-D interpolation is the product of two 1-D ones
SEPARABLE_MODES = ('bilinear', 'bicubic')


def interpolation_matrix(src: int, dst: int, mode: str,
                         like: Tensor) -> Tensor:
    """(dst, src) weights of 1-D ``mode`` resizing, ``align_corners=False``:
    row ``y`` holds the weight of every source position in output ``y``.
    ``F.interpolate`` of the (src, src) identity along one axis (the other
    axis has size 1, which it maps to itself with weight 1)."""
    if mode not in SEPARABLE_MODES:
        raise ValueError(f'mode must be one of {SEPARABLE_MODES}, got '
                         f'{mode!r}')
    eye = torch.eye(src, dtype=like.dtype, device=like.device)
    # (1, src channels, src, 1) -> (1, src, dst, 1): channel i is source
    # position i's response at every output
    weights = F.interpolate(
        eye[None, :, :, None], size=(dst, 1), mode=mode, align_corners=False)
    return weights[0, :, :, 0].t()  # (dst, src)


def separable_resize_pos_embed(pos_embed: Tensor,
                               src_shape: Sequence[int],
                               dst_shape: Sequence[int],
                               mode: str = 'bicubic',
                               num_extra_tokens: int = 1) -> Tensor:
    """mmpretrain's ``resize_pos_embed`` computed as ``W_h @ grid @ W_w^T``.

    Args:
        pos_embed (Tensor): (1, E + H * W, C), E extra tokens (CLS) first,
            then the (H, W) = ``src_shape`` grid in row-major order.
        src_shape (Sequence[int]): (H, W) of the learnt grid.
        dst_shape (Sequence[int]): (H', W') of the input's token grid.
        mode (str): ``'bicubic'`` or ``'bilinear'`` (``align_corners=False``,
            as mmpretrain resizes).
        num_extra_tokens (int): E, tokens passed through unchanged.

    Returns:
        Tensor: (1, E + H' * W', C); ``pos_embed`` itself when the shapes
        are equal, as mmpretrain returns it.
    """
    src_h, src_w = src_shape
    dst_h, dst_w = dst_shape
    if (src_h, src_w) == (dst_h, dst_w):
        return pos_embed
    batch, length, channels = pos_embed.shape
    if batch != 1 or length != num_extra_tokens + src_h * src_w:
        raise ValueError(
            f'pos_embed must be (1, {num_extra_tokens} + {src_h} * {src_w}, '
            f'C) for src_shape {tuple(src_shape)}, got '
            f'{tuple(pos_embed.shape)}')
    w_h = interpolation_matrix(src_h, dst_h, mode, pos_embed)  # (H', H)
    w_w = interpolation_matrix(src_w, dst_w, mode, pos_embed)  # (W', W)
    grid = pos_embed[0, num_extra_tokens:]  # (H * W, C)
    rows = w_h @ grid.reshape(src_h, src_w * channels)  # (H', W * C)
    # (W', W) @ (H', W, C) -> (H', W', C)
    resized = torch.matmul(w_w, rows.reshape(dst_h, src_w, channels))
    return torch.cat(
        [pos_embed[:, :num_extra_tokens],
         resized.reshape(1, dst_h * dst_w, channels)], dim=1)
