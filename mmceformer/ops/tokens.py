"""Gather and scatter of token subsets, padded with a validity mask."""
import torch
from torch import Tensor


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """Pick tokens: x (B, N, ...) and index (B, K) long -> (B, K, ...)."""
    expand = index.reshape(*index.shape, *([1] * (x.dim() - 2)))
    return x.gather(1, expand.expand(-1, -1, *x.shape[2:]))


def scatter_tokens(base: Tensor, index: Tensor, src: Tensor,
                   mask: Tensor) -> Tensor:
    """Write tokens back: a copy of ``base`` (B, N, C) with ``src`` (B, K, C)
    at ``index`` (B, K); entries whose ``mask`` (B, K) is False are dropped
    (padding indices may repeat a real one)."""
    batch, num, channels = base.shape
    # Padded entries go to an extra slot that is cut off afterwards.
    target = torch.where(mask, index, torch.full_like(index, num))
    out = torch.cat([base, base.new_zeros(batch, 1, channels)], dim=1)
    out = out.scatter(1, target[..., None].expand(-1, -1, channels),
                      src.to(out.dtype))
    return out[:, :num]
