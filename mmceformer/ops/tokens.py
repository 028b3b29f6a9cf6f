"""Gather and scatter of token subsets, padded with a validity mask."""
from typing import Optional

import torch
from torch import Tensor

from .linear_attention import is_tracing


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """Pick tokens: x (B, N, ...) and index (B, K) long -> (B, K, ...).

    ``index_select`` of rows of ``x`` viewed as (B * N, ...), the image's
    offset b N added to its indices: one copy per row, 1.7-6x faster than
    advanced indexing ``x[b, index]`` on CPU (and ``gather`` with the index
    expanded over the channels reads an index per element;
    tools/analysis/benchmark_token_ops.py times them). Where (B * N, ...)
    is not a view of ``x`` (B > 1, a transposed layout), advanced indexing,
    which does not copy ``x`` first. ``index`` must be long (a bool one
    would index as a mask) and in [0, N): on the ``index_select`` path an
    index outside it reads a neighbouring image's rows."""
    if index.dtype != torch.long:
        raise TypeError(f'index must be torch.long, got {index.dtype}')
    batch, num = x.shape[:2]
    if batch == 1 or x.stride(0) == num * x.stride(1):  # flatten is a view
        rows = _flat_rows(index, batch, num)  # (B, K)
        # (B * N, ...) -> (B * K, ...) -> (B, K, ...)
        picked = x.flatten(0, 1).index_select(0, rows.flatten())
        return picked.unflatten(0, rows.shape)
    return x[torch.arange(batch, device=x.device)[:, None], index]


def _flat_rows(index: Tensor, batch: int, rows_per_image: int) -> Tensor:
    """Per-image indices (B, K) into rows of the images' rows stacked:
    image b's start at b ``rows_per_image``. (B, K) long."""
    offset = torch.arange(batch, device=index.device)[:, None]  # (B, 1)
    return index + offset * rows_per_image


def scatter_tokens(base: Tensor, index: Tensor, src: Tensor,
                   mask: Tensor) -> Tensor:
    """Write tokens back: a copy of ``base`` (B, N, C) with ``src`` (B, K, C)
    at ``index`` (B, K); entries whose ``mask`` (B, K) is False are dropped
    (padding indices may repeat a real one)."""
    batch, num, channels = base.shape
    # the one copy of base, with the spare slot: (B, N + 1, C) -> flat
    flat = torch.cat([base, base.new_zeros(batch, 1, channels)], dim=1)
    return _scatter_with_slot(flat.flatten(0, 1), batch, num, index, src, mask)


def place_tokens(index: Tensor, src: Tensor, mask: Tensor, num: int,
                 dtype: torch.dtype) -> Tensor:
    """:func:`scatter_tokens` into zeros: a (B, ``num``, C) sequence of
    ``dtype`` holding ``src`` (B, K, C) at ``index`` (B, K) where ``mask``
    (B, K) is True, 0 elsewhere (one zero fill, no copy of a base)."""
    batch, _, channels = src.shape
    flat = src.new_zeros(batch * (num + 1), channels, dtype=dtype)
    return _scatter_with_slot(flat, batch, num, index, src, mask)


def _slot_rows(batch: int, num: int, index: Tensor, mask: Tensor) -> Tensor:
    """Rows of a flat (B * (N + 1), C) buffer that ``index`` (B, K) long
    addresses: image b's rows start at b (N + 1); padded entries (``mask``
    False) go to the image's extra last slot. Returns (B * K,) long."""
    if index.dtype != torch.long:
        raise TypeError(f'index must be torch.long, got {index.dtype}')
    target = torch.where(mask, index, torch.full_like(index, num))
    return _flat_rows(target, batch, num + 1).flatten()


def _scatter_with_slot(flat: Tensor, batch: int, num: int, index: Tensor,
                       src: Tensor, mask: Tensor,
                       rows: Optional[Tensor] = None) -> Tensor:
    """Write ``src`` rows into ``flat`` (B * (N + 1), C) in place, at the
    :func:`_slot_rows` of ``index`` (or the ``rows`` given), then cut the
    extra slots off: (B, N, C).

    One row copy per token (``index_copy_``) instead of ``scatter_``'s
    index per element (tools/analysis/benchmark_token_ops.py times both).
    Real indices are distinct and in [0, N) (as every caller makes them),
    so the result is the scatter's exactly; unlike ``scatter_``, an index
    outside [0, N) would not raise but land in a neighbouring image's rows.
    ``flat`` is written in place and read on, so that tracing (ONNX) sees
    the write."""
    if rows is None:
        rows = _slot_rows(batch, num, index, mask)
    channels = flat.shape[1]
    flat.index_copy_(0, rows, src.to(flat.dtype).reshape(-1, channels))
    # (B * (N + 1), C) -> (B, N + 1, C) -> (B, N, C)
    return flat.view(batch, num + 1, channels)[:, :num]


class GridBuffer:
    """One zero grid for the :func:`place_tokens` of every block of a
    forward, instead of a new zero map per block.

    A new map per block costs a zero fill of the whole grid (and, for a
    large one, fresh pages from the OS) although only the kept tokens'
    cells change: the buffer is filled with zeros once, every placement
    writes its rows, and the rows of the previous placement are zeroed
    again only when the placement changed (pruning makes a new ``pos``
    tensor; the blocks between two pruning blocks pass the same one on,
    so identity tells). The result equals :func:`place_tokens`'s exactly.

    The grid it returns is overwritten by the next placement: it serves
    only where nothing keeps it, so with autograd on (backward would read
    it) and while tracing or compiling it hands out a fresh map instead.
    """

    def __init__(self):
        self._flat = None  # (B * (N + 1), C), zero outside self._rows
        self._rows = None  # (B * K,) rows the last placement wrote
        self._key = None

    def place(self, index: Tensor, src: Tensor, mask: Tensor, num: int,
              key: tuple) -> Tensor:
        """:func:`place_tokens` (index (B, K), src (B, K, C), mask (B, K)
        -> (B, ``num``, C) of ``src``'s dtype); ``key``: a tuple of objects
        that are the same (``is``) exactly when ``index`` and ``mask`` are,
        such as the ``(pos, mask)`` tensors they were computed from."""
        if torch.is_grad_enabled() or is_tracing():
            return place_tokens(index, src, mask, num, src.dtype)
        batch, _, channels = src.shape
        flat = self._flat
        if flat is None or flat.shape != (batch * (num + 1), channels) or \
                flat.dtype != src.dtype or flat.device != src.device:
            flat = self._flat = src.new_zeros(batch * (num + 1), channels)
            self._rows = None
        elif not self._same(key):
            flat.index_fill_(0, self._rows, 0)  # the last placement's cells
            self._rows = None
        if self._rows is None:
            self._rows = _slot_rows(batch, num, index, mask)
            self._key = key
        return _scatter_with_slot(flat, batch, num, index, src, mask,
                                  self._rows)

    def _same(self, key: tuple) -> bool:
        return self._key is not None and all(
            a is b for a, b in zip(key, self._key))


def _is_full_grid(num_image: int, mask, grid_size) -> bool:
    """Whether a sequence holds every grid token, in raster order.

    Token sequences here always keep their tokens in spatial order (pruning
    keeps order, padding goes last), so a sequence without padding whose
    image-token count fills the grid is the grid itself; no comparison of
    positions (a device sync) is needed on this hot path."""
    return mask is None and num_image == grid_size[0] * grid_size[1]


def tokens_to_grid(x: Tensor,
                   pos: Tensor,
                   mask,
                   num_prefix_tokens: int,
                   grid_size,
                   buffer: Optional[GridBuffer] = None) -> Tensor:
    """Image tokens onto their grid for a convolution.

    Args:
        x (Tensor): (B, N, C) tokens, the first ``num_prefix_tokens`` of which
            are prefix tokens (CLS) that have no cell.
        pos (Tensor): (B, N) long, original index of each token; grid token
            ``p`` sits at cell ``p - num_prefix_tokens`` of the raster.
        mask (Tensor | None): (B, N) bool, False on padding.
        num_prefix_tokens (int): P.
        grid_size (tuple[int, int]): (Hg, Wg).
        buffer (GridBuffer | None): place into this forward's reused grid
            (the result is then overwritten by the buffer's next use);
            None makes a new one.

    Returns:
        Tensor: (B, C, Hg, Wg); cells without a token (pruned, SPEC 3) are 0.
    """
    batch, num, channels = x.shape
    grid_h, grid_w = grid_size
    image_x = x[:, num_prefix_tokens:]
    if _is_full_grid(num - num_prefix_tokens, mask, grid_size):
        grid = image_x
    else:
        cell = pos[:, num_prefix_tokens:] - num_prefix_tokens
        valid = torch.ones_like(cell, dtype=torch.bool) if mask is None \
            else mask[:, num_prefix_tokens:]
        if buffer is None:
            grid = place_tokens(cell, image_x, valid, grid_h * grid_w,
                                image_x.dtype)
        else:
            grid = buffer.place(cell, image_x, valid, grid_h * grid_w,
                                key=(pos, mask))
    # (B, Hg * Wg, C) -> (B, Hg, Wg, C) -> (B, C, Hg, Wg), a channels-last
    # view: no copy, and CPU depthwise convolutions run several times
    # faster on it (oneDNN) than on a contiguous NCHW tensor.
    return grid.reshape(batch, grid_h, grid_w, channels).permute(0, 3, 1, 2)


def grid_to_tokens(grid: Tensor, pos: Tensor, mask,
                   num_prefix_tokens: int) -> Tensor:
    """Read tokens back from a grid: (B, C, Hg, Wg) and the (B, N) positions
    and (B, N) mask (or None) of a token sequence -> (B, N - P, C) for its
    image tokens, in order (padding rows read an arbitrary cell)."""
    # (B, C, Hg, Wg) -> (B, Hg, Wg, C) -> (B, Hg * Wg, C); a view when the
    # grid is channels-last, as tokens_to_grid makes it.
    flat = grid.permute(0, 2, 3, 1).flatten(1, 2)
    cell = pos[:, num_prefix_tokens:] - num_prefix_tokens
    if _is_full_grid(cell.shape[1], mask, grid.shape[-2:]):
        return flat
    return gather_tokens(flat, cell.clamp(min=0))


def with_prefix(kept: Tensor, kept_mask: Tensor, num_prefix_tokens: int):
    """Indices into image tokens (B, R') -> indices into the sequence with
    the P prefix tokens in front, (B, P + R'), and the matching mask."""
    batch = kept.shape[0]
    head = torch.arange(
        num_prefix_tokens, device=kept.device).expand(batch, num_prefix_tokens)
    index = torch.cat([head, kept + num_prefix_tokens], dim=1)
    mask = torch.cat([torch.ones_like(head, dtype=torch.bool), kept_mask],
                     dim=1)
    return index, mask


def mask_to_index(mask: Tensor):
    """Indices of the True entries of a (B, N) bool mask, row by row in
    increasing order, padded to the longest row: returns ``index`` (B, K)
    long (0 on padding) and ``valid`` (B, K) bool."""
    batch, num = mask.shape
    positions = torch.arange(num, device=mask.device).expand(batch, num)
    order = torch.where(mask, positions, positions + num).argsort(-1)
    width = int(mask.sum(-1).max()) if batch else 0
    index = order[:, :width]
    valid = mask.gather(1, index)
    return index.masked_fill(~valid, 0), valid


def groups_from_block_mask(mask: Tensor) -> Tensor:
    """Group ids from an additive mask that only separates groups (0 within
    a group, negative across), as Swin's shifted-window mask does.

    Args:
        mask (Tensor): (W, N, N) additive mask, 0 where tokens may interact.

    Returns:
        Tensor: (W, N) long ids ``0 .. G-1`` per row, numbered by first
        appearance, so that ``mask[w, i, j] == 0`` iff ids are equal.
    """
    same = mask == 0  # (W, N, N)
    num = mask.shape[-1]
    first = same.int().argmax(-1)  # (W, N): first member of i's group
    leader = first == torch.arange(num, device=mask.device)
    rank = leader.long().cumsum(-1) - 1  # (W, N): id of each leader
    return rank.gather(1, first)
