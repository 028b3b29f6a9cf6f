"""The position-embedding resize of every forward at a new input size:
mmpretrain's ``resize_pos_embed`` (one bicubic ``F.interpolate``) against
``mmceformer.ops.separable_resize_pos_embed`` (two matrix products),
interleaved, and against a copy of the result.

    python tools/analysis/benchmark_pos_embed.py [--src 14 14] \
        [--dst 50 84] [--channels 384] [--repeats 30] \
        [--backbone CONFIG --shape 800 1344 [--deploy]]

Defaults: DeiT-S / CEFormer-S (384 channels, a 14 x 14 grid learnt at 224)
at 800x1344 (a 50 x 84 grid). The outputs are checked equal (1e-5) first.
``--backbone`` then times the config's backbone (eval, random weights) with
each resize in turn, interleaved, and prints the ratio.
"""
import argparse
import importlib
from unittest import mock

import torch
from mmpretrain.models.utils import resize_pos_embed

from mmceformer.ops import separable_resize_pos_embed
from mmceformer.utils.complexity import interleaved_latency


def upstream(pos, src, dst, mode='bicubic', num_extra_tokens=1):
    return resize_pos_embed(pos, src, dst, mode, num_extra_tokens)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--src', type=int, nargs=2, default=[14, 14])
    parser.add_argument('--dst', type=int, nargs=2, default=[50, 84])
    parser.add_argument('--channels', type=int, default=384)
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--backbone', help='a config: time its backbone')
    parser.add_argument('--shape', type=int, nargs=2, default=[800, 1344])
    parser.add_argument('--deploy', action='store_true')
    args = parser.parse_args(argv)
    src, dst = tuple(args.src), tuple(args.dst)
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + src[0] * src[1], args.channels)
    want = upstream(pos, src, dst)
    got = separable_resize_pos_embed(pos, src, dst)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    rows = [
        ('mmpretrain resize_pos_embed (bicubic F.interpolate)',
         lambda: upstream(pos, src, dst)),
        ('separable_resize_pos_embed (two matrix products, now)',
         lambda: separable_resize_pos_embed(pos, src, dst)),
        ('copy of the resized embedding (reference)', want.clone),
    ]
    with torch.no_grad():
        seconds = interleaved_latency([fn for _, fn in rows], 1, args.repeats)
    print(f'{args.channels} channels, {src[0]}x{src[1]} -> {dst[0]}x{dst[1]}'
          f' grid, {torch.get_num_threads()} threads, median of '
          f'{args.repeats}, interleaved')
    print('| resize | ms | ratio |\n|---|---|---|')
    for (name, _), t in zip(rows, seconds):
        print(f'| {name} | {1e3 * t:.3f} | {t / seconds[0]:.2f} |')
    result = dict(ops=seconds)
    if args.backbone:
        result['backbone'] = time_backbone(args.backbone, args.shape,
                                           args.deploy, args.repeats)
    return result


def time_backbone(config, shape, deploy, repeats):
    """Median seconds of the backbone's forward with mmpretrain's resize
    and with the separable one, interleaved (the module's name swapped)."""
    from mmengine.config import Config

    from roofline import backbone_and_input
    backbone, x = backbone_and_input(Config.fromfile(config), shape, deploy)
    module = importlib.import_module(type(backbone).__module__)
    if not hasattr(module, 'separable_resize_pos_embed'):
        raise ValueError(f'{type(backbone).__name__} does not resize with '
                         'separable_resize_pos_embed')

    def run(resize):

        def fn():
            with mock.patch.object(module, 'separable_resize_pos_embed',
                                   resize):
                return backbone(x)

        return fn

    with torch.no_grad():
        old, new = interleaved_latency(
            [run(upstream), run(separable_resize_pos_embed)], 1,
            max(1, repeats // 6))
    print(f'{type(backbone).__name__} 1x3x{shape[0]}x{shape[1]}: '
          f'mmpretrain resize {1e3 * old:.1f} ms, separable {1e3 * new:.1f} '
          f'ms, ratio {new / old:.3f}')
    return old, new


if __name__ == '__main__':
    main()
