"""MACs and latency of several configs' backbones at several input sizes,
as ratios to the first config, measured in one run (Markdown table).

    python tools/analysis/compare_modes.py \\
        configs/cls_deit_s_{softmax,eattn}_in1k.py \\
        --shapes 224x224 800x1344 [--repeats 3] [--prune-mode skip]

Backbones only (random weights, batch 1, eval, CPU unless ``--device``);
latency is the median of ``--repeats`` runs after one warm-up, the models
interleaved. ``--prune-mode skip`` measures the dense-output behaviour of
detection (pruned tokens skip blocks) instead of the classification one.
"""
import argparse
import os.path as osp

import torch
from mmengine.config import Config

import mmceformer  # noqa: F401
from mmceformer.utils.complexity import (build_model, count_macs,
                                         interleaved_latency)


def parse_shape(text):
    height, width = (int(v) for v in text.lower().split('x'))
    return height, width


def compare(configs, shapes, repeats=3, device='cpu', prune_mode=None):
    models = []
    for config in configs:
        cfg = Config.fromfile(config)
        if prune_mode is not None:
            cfg.model.backbone.prune_mode = prune_mode
        model, _ = build_model(cfg)
        models.append(model.backbone.to(device))
    rows = []
    for shape in shapes:
        x = torch.randn(1, 3, *shape, device=device)
        seconds = interleaved_latency([lambda m=m: m(x) for m in models],
                                      repeats=repeats,
                                      device=device)
        macs = [count_macs(lambda: m(x)) for m in models]
        for config, mac, median in zip(configs, macs, seconds):
            rows.append(
                dict(
                    config=osp.basename(config),
                    shape=shape,
                    gmacs=mac / 1e9,
                    ms=1e3 * median))
    return rows


def format_rows(rows, num_configs):
    lines = [
        '| config | input | GMACs | MACs vs first | CPU ms | '
        'speed-up vs first |', '|---|---|---|---|---|---|'
    ]
    for start in range(0, len(rows), num_configs):
        base = rows[start]
        for r in rows[start:start + num_configs]:
            lines.append(
                f"| {r['config']} | {r['shape'][0]}x{r['shape'][1]} | "
                f"{r['gmacs']:.2f} | {r['gmacs'] / base['gmacs']:.2f} | "
                f"{r['ms']:.0f} | {base['ms'] / r['ms']:.2f}x |")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--shapes', nargs='+', default=['224x224'])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--prune-mode', choices=['drop', 'skip'])
    args = parser.parse_args(argv)
    rows = compare(args.configs, [parse_shape(s) for s in args.shapes],
                   args.repeats, args.device, args.prune_mode)
    print(f'# backbones, batch 1, {args.device}, threads='
          f'{torch.get_num_threads()}, median of {args.repeats}')
    print(format_rows(rows, len(args.configs)))
    return rows


if __name__ == '__main__':
    main()
