"""Latency and images/s of a config's model on a dummy input, optionally
against a second config in the same run.

    python tools/analysis/benchmark.py CONFIG [--checkpoint CKPT]
        [--shape H W] [--batch 1] [--device cpu|cuda] [--warmup 3]
        [--repeats 10] [--baseline OTHER_CONFIG] [--part backbone|whole]

Times ``--repeats`` forward passes after ``--warmup`` (median, in eval mode,
no gradients); with ``--baseline`` the other model is timed in the same
process, interleaved run by run, and the speed-up is printed.
"""
import argparse
from typing import Dict, Optional, Sequence

import torch
from mmengine.config import Config

import mmceformer  # noqa: F401
from mmceformer.utils.allocator import (add_malloc_argument, malloc_note,
                                        set_malloc)
from mmceformer.utils.complexity import build_model, interleaved_latency


def _forward_fn(model, scope, inputs, part):
    if part == 'backbone':
        return lambda: model.extract_feat(inputs)
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        shape = tuple(inputs.shape[-2:])
        sample = DetDataSample(
            metainfo=dict(
                img_shape=shape,
                ori_shape=shape,
                pad_shape=shape,
                scale_factor=(1., 1.),
                batch_input_shape=shape))
        samples = [sample] * inputs.shape[0]
        return lambda: model(inputs, samples, mode='predict')
    return lambda: model(inputs, mode='tensor')


def prepare(config, checkpoint, shape, batch, device, part):
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    model, scope = build_model(cfg)
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu')
    model.to(device)
    inputs = torch.randn(batch, 3, *shape, device=device)
    return _forward_fn(model, scope, inputs, part)


def benchmark(configs: Sequence,
              shape=(224, 224),
              batch: int = 1,
              device: str = 'cpu',
              warmup: int = 3,
              repeats: int = 10,
              checkpoints: Optional[Sequence] = None,
              part: str = 'whole') -> Dict[str, Dict[str, float]]:
    """Median latency (ms) and images/s of each config, runs interleaved so
    that they share the machine's state."""
    device = torch.device(device)
    checkpoints = checkpoints or [None] * len(configs)
    fns = [
        prepare(c, ckpt, shape, batch, device, part)
        for c, ckpt in zip(configs, checkpoints)
    ]
    seconds = interleaved_latency(fns, warmup, repeats, device)
    results = {}
    for i, (config, median) in enumerate(zip(configs, seconds)):
        name = config if isinstance(config, str) else (
            getattr(config, 'filename', None) or f'model_{i}')
        results[name] = dict(
            latency_ms=1e3 * median, images_per_s=batch / median)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--checkpoint')
    parser.add_argument('--baseline', help='a second config, timed alike')
    parser.add_argument('--baseline-checkpoint')
    parser.add_argument('--shape', type=int, nargs='+', default=[224, 224])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument(
        '--part',
        choices=['whole', 'backbone'],
        default='whole',
        help='time the whole model or backbone (+ neck)')
    add_malloc_argument(parser)
    args = parser.parse_args(argv)
    set_malloc(args.malloc)
    shape = args.shape * 2 if len(args.shape) == 1 else args.shape
    configs = [args.config] + ([args.baseline] if args.baseline else [])
    checkpoints = [args.checkpoint, args.baseline_checkpoint]
    results = benchmark(configs, shape, args.batch, args.device, args.warmup,
                        args.repeats, checkpoints[:len(configs)], args.part)
    print(f'# {args.part} on {args.device}, input {args.batch}x3x'
          f'{shape[0]}x{shape[1]}, median of {args.repeats} after '
          f'{args.warmup} warm-up, threads={torch.get_num_threads()}, '
          f'{malloc_note(args.malloc)}')
    for name, r in results.items():
        print(f"{name}: {r['latency_ms']:.1f} ms, "
              f"{r['images_per_s']:.2f} images/s")
    if args.baseline:
        ours, base = (results[c]['latency_ms'] for c in configs)
        print(f'speed-up vs baseline: {base / ours:.2f}x '
              f'({args.config} vs {args.baseline})')
    return results


if __name__ == '__main__':
    main()
