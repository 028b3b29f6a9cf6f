"""CEFormer's conv stem (C4, thesis section 4.4) in horizontal bands, for
inference.

The stem is ``conv 7x7/2 (pad 3) -> BN -> ReLU -> max-pool 3x3/2 (pad 1)
-> conv 4x4/4``. Its first map is the largest tensor of the whole model:
at 800x1344, 400 x 672 x 128 floats (137.6 MB), and the max-pool adds its
output (34.4 MB) and an int64 index map (68.8 MB). glibc maps blocks
above 32 MiB afresh on every allocation, so each forward can write them
through page faults (docs/benchmarks.md, "Page faults"). In bands of
rows the first map only exists a band at a time (``band_bytes``, cache
sized), and the max-pool writes each band's rows into one pooled map:
the same sums of the same products, so the result is the whole stem's
(a difference of 0.0 on the CPU here; tested to 1e-5).

Geometry, per output row ``q`` of the 4x4/4 projection: pooled rows ``4q
.. 4q + 3``, which read first-map rows ``8q - 1 .. 8q + 7``, which read
input rows ``16q - 5 .. 16q + 17``. A band of projection rows ``[q0,
q1)`` takes first-map rows ``[8 q0 - 1, 8 q1 - 1]`` clipped to the map
(neighbouring bands share one first-map row: with 3 projection rows a
band, the 7x7 convolution computes 25 rows for 24). The input band gets
the convolution's zero rows where it passes the image's edge, and the
pool pads a band with -inf only at the map's edges: the first band above
(padding 1), a last band that ends at the map's last row below.

Pure torch, no OpenMMLab import.
"""
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

#: the first convolution's kernel, stride and padding (7x7/2, pad 3)
CONV_KERNEL, CONV_STRIDE, CONV_PAD = 7, 2, 3
#: first-map rows per projection row: pool stride 2 x projection stride 4
ROWS_PER_OUTPUT_ROW = 8


def stem_sizes(height: int):
    """Rows of the stem's maps for an input of ``height`` rows: the first
    map's, the pooled map's and the projection's, (Hc, Hp, Hq); the same
    for columns of a width."""
    first = (height + 2 * CONV_PAD - CONV_KERNEL) // CONV_STRIDE + 1
    pooled = (first - 1) // 2 + 1  # 3x3/2, pad 1
    return first, pooled, pooled // 4  # 4x4/4, no padding


def stem_band_rows(x: Tensor, channels: int, band_bytes: int) -> int:
    """Projection rows per band so that a band's 8 first-map rows per
    projection row ((B, channels, 8, Wc) each) take at most ``band_bytes``,
    at least 1 (a band after the first also holds the row it shares with
    the band above: 25 rows for 3 projection rows). ``x``: (B, 3, H, W)
    input."""
    if band_bytes < 1:
        raise ValueError(f'band_bytes must be >= 1, got {band_bytes}')
    batch, _, _, width = x.shape
    first_width = stem_sizes(width)[0]
    row_bytes = ROWS_PER_OUTPUT_ROW * first_width * channels * batch * \
        x.element_size()
    return max(1, band_bytes // row_bytes)


def conv_stem_in_bands(x: Tensor, first: Callable[[Tensor], Tensor],
                       proj: Callable[[Tensor], Tensor], channels: int,
                       rows: int) -> Tensor:
    """The stem on ``x`` in bands of ``rows`` projection rows.

    Args:
        x (Tensor): (B, 3, H, W) input (channels-last as the stem runs it).
        first (callable): an input band zero-padded in height, (B, 3, h,
            W), to the activated first map of it: the 7x7/2 convolution
            with padding ``(0, 3)`` (the band brings its own rows), its
            norm and its ReLU, (B, channels, (h - 7) // 2 + 1, Wc).
        proj (callable): the 4x4/4 projection, (B, channels, 4 k, Wp) ->
            (B, E, k, Wp // 4).
        channels (int): the first map's channels.
        rows (int): projection rows per band, >= 1.

    Returns:
        Tensor: (B, E, Hq, Wq), the projection of the pooled map, as the
        whole stem computes it.
    """
    if rows < 1:
        raise ValueError(f'rows must be >= 1, got {rows}')
    batch, _, height, width = x.shape
    first_rows, _, out_rows = stem_sizes(height)
    pooled_width = stem_sizes(width)[1]
    # the pooled rows that the projection reads, (B, C, 4 Hq, Wp)
    pooled = torch.empty((batch, channels, 4 * out_rows, pooled_width),
                         dtype=x.dtype,
                         device=x.device,
                         memory_format=torch.channels_last)
    for q0 in range(0, out_rows, rows):
        q1 = min(out_rows, q0 + rows)
        start = max(ROWS_PER_OUTPUT_ROW * q0 - 1, 0)  # first-map rows
        stop = min(ROWS_PER_OUTPUT_ROW * q1 - 1, first_rows - 1)
        lo = CONV_STRIDE * start - CONV_PAD  # input rows, may pass edges
        hi = CONV_STRIDE * stop + CONV_PAD
        band = x[:, :, max(lo, 0):min(hi, height - 1) + 1]
        if lo < 0 or hi > height - 1:  # the convolution's zero rows
            band = F.pad(band, (0, 0, max(0, -lo), max(0, hi - height + 1)))
        band = first(band)  # (B, C, stop - start + 1, Wc)
        if q0 and stop < ROWS_PER_OUTPUT_ROW * q1 - 1:
            # the last pooled row reads the row below the map: -inf
            band = F.pad(band, (0, 0, 0, 1), value=float('-inf'))
        # the first band pads above (row -1); the others start at their
        # window's first row
        band = F.max_pool2d(band, 3, 2, (1 if q0 == 0 else 0, 1))
        pooled[:, :, 4 * q0:4 * q1].copy_(band[:, :, :4 * (q1 - q0)])
    return proj(pooled)
