"""CEFormer's depthwise convolutions over the FFN's hidden grid, formulation
against formulation and against a copy of the same map, interleaved.

    python tools/analysis/benchmark_dwconv.py [--grid 50 84] \
        [--channels 1920] [--repeats 20] [--chunk 128]

Shapes default to CEFormer-S's hidden map at 800x1344 (a 50 x 84 grid of
1920 channels). Rows, each checked against the first to 1e-4:

- the deploy form's merged 7x7 kernel on the grid as the model holds it (a
  channels-last view of the token rows; what ``tokens_to_grid`` returns);
- the same on a contiguous NCHW copy and on a contiguous channels-last
  copy (the copy's time included);
- the training form: three 3x3 kernels (dilations 1, 2, 3) and their sum,
  27 instead of 49 MACs per output;
- the merged kernel over ``--chunk`` channels at a time (each chunk's map
  small enough for a core's cache), the outputs joined by a ``cat``;
- references: a copy of the map, and the MACs at the GEMM rate of a
  1024-cubed ``torch.mm`` measured in the same run.

Prints the median ms and the ratio to the first row.
"""
import argparse
import time

import torch
import torch.nn.functional as F

from mmceformer.utils.complexity import interleaved_latency


def gemm_macs_per_second(size=1024, repeats=5):
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return size**3 / best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--grid', type=int, nargs=2, default=[50, 84])
    parser.add_argument('--channels', type=int, default=1920)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument(
        '--chunk', type=int, default=128, help='channels per chunk')
    args = parser.parse_args(argv)
    if args.chunk < 1:
        parser.error(f'--chunk must be >= 1, got {args.chunk}')
    height, width = args.grid
    channels = args.channels
    torch.manual_seed(0)
    # the model's grid: (1, H * W, C) token rows viewed as (1, C, H, W)
    rows = torch.randn(1, height * width, channels)
    grid = rows.view(1, height, width, channels).permute(0, 3, 1, 2)
    merged_w = torch.randn(channels, 1, 7, 7)
    bias = torch.randn(channels)
    branch_w = [torch.randn(channels, 1, 3, 3) for _ in range(3)]
    # the merged kernel of the branches, as ConvFFN.switch_to_deploy builds it
    merged_w.zero_()
    for d, w in zip((1, 2, 3), branch_w):
        taps = slice(3 - d, 3 + d + 1, d)
        merged_w[:, :, taps, taps] += w

    def merged(x):
        return F.conv2d(x, merged_w, bias, padding=3, groups=channels)

    def branches(x):
        out = F.conv2d(x, branch_w[0], bias, padding=1, groups=channels)
        for d, w in zip((2, 3), branch_w[1:]):
            out = out + F.conv2d(
                x, w, None, padding=d, dilation=d, groups=channels)
        return out

    def channel_chunks(x, size):
        # depthwise: each channel on its own, so chunks of channels are
        # independent convolutions whose maps fit a core's cache
        return torch.cat([
            F.conv2d(
                x[:, i:i + size],
                merged_w[i:i + size],
                bias[i:i + size],
                padding=3,
                groups=min(size, channels - i))
            for i in range(0, channels, size)
        ], 1)

    candidates = [
        ('merged 7x7 on the channels-last view (as the model runs it)',
         lambda: merged(grid)),
        ('merged 7x7 on a contiguous NCHW copy',
         lambda: merged(grid.contiguous())),
        ('merged 7x7 on a contiguous channels-last copy',
         lambda: merged(grid.contiguous(memory_format=torch.channels_last))),
        ('three 3x3 branches summed (training form), channels-last view',
         lambda: branches(grid)),
        (f'merged 7x7 in chunks of {args.chunk} channels, joined by a cat',
         lambda: channel_chunks(grid, args.chunk)),
        ('copy of the map (reference)', lambda: rows.clone()),
    ]
    with torch.no_grad():
        expected = merged(grid)
        for label, fn in candidates[1:-1]:
            torch.testing.assert_close(
                fn(), expected, rtol=1e-4, atol=1e-4, msg=label)
        rate = gemm_macs_per_second()
        macs = 49 * channels * height * width
        print(f'grid {height}x{width}, {channels} channels; '
              f'{torch.get_num_threads()} threads, median of {args.repeats},'
              f' interleaved; GEMM rate {rate / 1e9:.1f} GMAC/s, so the '
              f"merged kernel's {macs / 1e6:.0f} MMACs take at least "
              f'{1e3 * macs / rate:.2f} ms')
        seconds = interleaved_latency([fn for _, fn in candidates], 1,
                                      args.repeats)
    print('| formulation | ms | ratio to the first |')
    print('|---|---|---|')
    for (label, _), s in zip(candidates, seconds):
        print(f'| {label} | {1e3 * s:.2f} | {s / seconds[0]:.2f} |')
    return dict(zip([label for label, _ in candidates], seconds))


if __name__ == '__main__':
    main()
