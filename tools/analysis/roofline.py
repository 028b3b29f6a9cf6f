"""A config's model, op by op, against this machine's roofline.

    python tools/analysis/roofline.py CONFIG [--shape 800 1344] [--deploy] \
        [--detector [--image-size 1333 800]] [--repeats 5] [--top 15] \
        [--cfg-options model.backbone.prune_mode=drop]

Measures the machine first (memory bandwidth from a 64 MB copy, fp32 GEMM
rate from a 1024-cubed ``torch.mm``, each the best of 10 at torch's thread
count), then runs the config's backbone on a random (1, 3, H, W) input (or,
with ``--detector``, the whole detector's ``test_step`` on an image through
the config's test pipeline, as benchmark_detector.py does) under
``mmceformer.utils.roofline.op_records`` and prints per aten op: calls,
median time, share, the bytes it must move, its MACs, which bound applies,
the bound's time and the ratio of time to bound. Random weights, eval,
batch 1, CPU. Time is measured per op call inside a dispatch mode, which
adds Python overhead to each call: the eager time of the same forward
without the mode is printed beside the sum, so the overhead is visible.
Kernels that do not go through torch's dispatcher (mmcv's compiled ops:
RoIAlign, NMS, deformable attention's CUDA kernel) are in no row: with
``--detector`` the eager time includes them, the sum of the rows does not.
"""
import argparse
import os.path as osp
import statistics
import sys
import time

import torch
from mmengine.config import Config, DictAction

import mmceformer  # noqa: F401
from mmceformer.utils import roofline
from mmceformer.utils.complexity import build_model

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))


def model_call(cfg: Config,
               shape=(224, 224),
               detector: bool = False,
               image_size=(1333, 800),
               deploy: bool = False):
    """``fn()`` running the config's backbone (or, ``detector``, the whole
    detector's ``test_step``) once, in eval mode, random weights."""
    if detector:
        from benchmark_detector import (build_detector, synthetic_image,
                                        test_inputs)
        model = build_detector(cfg, None, 'cpu', False)
        if deploy and hasattr(model.backbone, 'switch_to_deploy'):
            model.backbone.switch_to_deploy()
        data = test_inputs(cfg, synthetic_image(*image_size))
        return lambda: model.test_step(data)
    model, _ = build_model(cfg)
    backbone = model.backbone
    backbone.eval()  # (mmpretrain backbones' train() returns None)
    if deploy and hasattr(backbone, 'switch_to_deploy'):
        backbone.switch_to_deploy()
    x = torch.randn(1, 3, *shape)
    return lambda: backbone(x)


def eager_seconds(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` without the dispatch mode."""
    times = []
    with torch.no_grad():
        fn()
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--shape', type=int, nargs=2, default=[224, 224],
                        metavar=('H', 'W'))
    parser.add_argument('--detector', action='store_true')
    parser.add_argument('--image-size', type=int, nargs=2,
                        default=[1333, 800], metavar=('W', 'H'))
    parser.add_argument('--deploy', action='store_true',
                        help="the backbone's switch_to_deploy() form")
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--top', type=int, default=15)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    peaks = roofline.machine_peaks()
    fn = model_call(cfg, tuple(args.shape), args.detector,
                    tuple(args.image_size), args.deploy)
    records = roofline.op_records(fn, repeats=args.repeats)
    rows = roofline.by_op(records, peaks)
    eager = eager_seconds(fn, args.repeats)
    what = (f'detector test_step, {args.image_size[0]}x{args.image_size[1]}'
            f' image' if args.detector else
            f'backbone, 1x3x{args.shape[0]}x{args.shape[1]}')
    print(f'{osp.basename(args.config)}: {what}'
          f'{", deploy form" if args.deploy else ""}; CPU, '
          f'{torch.get_num_threads()} threads, median of {args.repeats}')
    print(f"machine: {peaks['bandwidth'] / 1e9:.1f} GB/s copy bandwidth, "
          f"{peaks['macs_per_s'] / 1e9:.1f} GMAC/s fp32 GEMM")
    total = sum(r['seconds'] for r in records)
    print(f'sum of op times {1e3 * total:.1f} ms; the same forward without '
          f'the dispatch mode {1e3 * eager:.1f} ms')
    print(roofline.table(rows, args.top))
    return dict(peaks=peaks, rows=rows, eager=eager)


if __name__ == '__main__':
    main()
