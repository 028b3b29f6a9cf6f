"""The simple pyramid and mmdet's FPN on the token grid, layout against
layout, interleaved.

    python tools/analysis/benchmark_pyramid.py [--grid 50 84] \
        [--channels 384] [--repeats 12]

Shapes default to CEFormer-S / DeiT-S at 800x1344: a 50 x 84 token grid of
384 channels, as the backbone holds it (a channels-last view of the token
rows), through ``SimplePyramid`` (strides 4-32) and the FPN of the Mask
R-CNN configs (256 channels, 5 outputs). Rows, each checked against the
first (pyramid rows to 1e-5, FPN rows to 1e-4 of the largest output):

- the pyramid as it runs now (the stride-4 branch normalises channels-last;
  contiguous maps out);
- its stride-4 branch as four layers in sequence (mmpretrain's
  ``LayerNorm2d`` copies to NCHW), contiguous maps out;
- the same without the final copies: the layout before the RoIAlign fix
  (docs/changelog.md), three of four maps channels-last;
- the FPN on the contiguous maps (now), on the mixed maps (before) and on
  channels-last copies of all four (what the FPN would take if mmcv's
  RoIAlign read strided maps; it does not).

Prints the median ms and the ratio to the first row of each group.
"""
import argparse

import torch

from mmceformer.utils.complexity import interleaved_latency


def main(argv=None):
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    import mmdet.models  # noqa: F401
    from mmceformer.models import SimplePyramid
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--grid', type=int, nargs=2, default=[50, 84])
    parser.add_argument('--channels', type=int, default=384)
    parser.add_argument('--repeats', type=int, default=12)
    args = parser.parse_args(argv)
    height, width = args.grid
    channels = args.channels
    torch.manual_seed(0)
    init_default_scope('mmdet')
    pyramid = SimplePyramid(channels).eval()
    fpn = MODELS.build(
        dict(
            type='FPN',
            in_channels=list(SimplePyramid.out_channels(channels)),
            out_channels=256,
            num_outs=5)).eval()
    tokens = torch.randn(1, 1 + height * width, channels)
    # the backbone's grid: token rows viewed as (1, C, H, W)
    grid = tokens[:, 1:].reshape(1, height, width,
                                 channels).permute(0, 3, 1, 2)

    def in_sequence(x, contiguous):
        """The pyramid with each branch's layers called one by one."""
        maps = []
        for branch in pyramid.branches:
            y = torch.nn.Sequential.forward(branch, x) if isinstance(
                branch, torch.nn.Sequential) else branch(x)
            maps.append(y.contiguous() if contiguous else y)
        return tuple(maps)

    with torch.no_grad():
        now = pyramid(grid)
        before = in_sequence(grid, False)
        for a, b in zip(now, in_sequence(grid, True)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        for a, b in zip(now, before):
            torch.testing.assert_close(a, b.contiguous(), rtol=0, atol=1e-5)
        channels_last = tuple(
            m.contiguous(memory_format=torch.channels_last) for m in now)
        want = fpn(now)
        scale = max(float(w.abs().max()) for w in want)
        for maps in (before, channels_last):
            for a, b in zip(want, fpn(maps)):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-4 * scale)
        groups = [
            ('pyramid', [
                ('now (channels-last stride-4 branch, contiguous maps)',
                 lambda: pyramid(grid)),
                ('stride-4 branch in sequence, contiguous maps',
                 lambda: in_sequence(grid, True)),
                ('stride-4 branch in sequence, no copies (before the fix)',
                 lambda: in_sequence(grid, False)),
            ]),
            ('FPN', [
                ('on contiguous maps (now)', lambda: fpn(now)),
                ('on the mixed layout (before the fix)', lambda: fpn(before)),
                ('on channels-last maps (RoIAlign would misread them)',
                 lambda: fpn(channels_last)),
            ]),
        ]
        seconds = {}
        for name, rows in groups:
            seconds[name] = interleaved_latency([fn for _, fn in rows], 1,
                                                args.repeats)
    print(f'{channels} channels, {height}x{width} token grid, '
          f'{torch.get_num_threads()} threads, median of {args.repeats}, '
          'interleaved within each group')
    print('| group | variant | ms | ratio |\n|---|---|---|---|')
    for name, rows in groups:
        for (label, _), t in zip(rows, seconds[name]):
            print(f'| {name} | {label} | {1e3 * t:.1f} | '
                  f'{t / seconds[name][0]:.2f} |')
    return seconds


if __name__ == '__main__':
    main()
