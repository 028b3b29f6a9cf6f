"""MACs and CPU latency against input resolution, measured, as a PNG.

    python tools/analysis/plot_scaling.py [--out docs/scaling.png]
        [--sizes 224 448 672 896 1120 1344] [--repeats 2]

Backbones of DeiT-S (softmax), DeiT-S (E-Attention) and CEFormer-S, random
weights, batch 1, inputs of long side L and short side 0.6 L (rounded to 32,
as detection inputs), 224 x 224 for L = 224. MACs count every matrix product
and convolution that runs (attention included, pruned tokens as kept);
latency is the median of ``--repeats`` runs after one warm-up, with the
models interleaved so that they share the machine's state.
"""
import argparse
import json
import os
import os.path as osp

import torch

import mmceformer  # noqa: F401
from mmceformer.utils.complexity import (build_model, count_macs,
                                         interleaved_latency)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MODELS = {
    'DeiT-S softmax': 'cls_deit_s_softmax_in1k.py',
    'DeiT-S E-Attention': 'cls_deit_s_eattn_in1k.py',
    'CEFormer-S': 'cls_ceformer_s_in1k.py',
}


def shape_for(long_side: int):
    if long_side <= 224:
        return (long_side, long_side)
    return (max(32, round(0.6 * long_side / 32) * 32), long_side)


def measure_scaling(sizes, repeats=2, models=MODELS):
    from mmengine.config import Config
    backbones = {}
    for name, config in models.items():
        model, _ = build_model(
            Config.fromfile(osp.join(ROOT, 'configs', config)))
        backbones[name] = model.backbone
    rows = []
    for size in sizes:
        shape = shape_for(size)
        x = torch.randn(1, 3, *shape)
        row = dict(size=size, shape=shape)
        seconds = interleaved_latency(
            [lambda b=b: b(x) for b in backbones.values()], repeats=repeats)
        for (name, backbone), median in zip(backbones.items(), seconds):
            row[name] = dict(
                gmacs=count_macs(lambda: backbone(x)) / 1e9, ms=1e3 * median)
        rows.append(row)
        print(json.dumps(row))
    return rows


def plot(rows, out_file):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = [k for k in rows[0] if k not in ('size', 'shape')]
    sizes = [r['size'] for r in rows]
    fig, (ax_macs, ax_ms) = plt.subplots(1, 2, figsize=(10, 4))
    for name in names:
        ax_macs.plot(sizes, [r[name]['gmacs'] for r in rows], 'o-', label=name)
        ax_ms.plot(sizes, [r[name]['ms'] for r in rows], 'o-', label=name)
    for ax, label in ((ax_macs, 'GMACs'),
                      (ax_ms, f'CPU latency, ms ({torch.get_num_threads()}'
                       ' threads)')):
        ax.set_xlabel('input long side (short side 0.6x)')
        ax.set_ylabel(label)
        ax.set_yscale('log')
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle('Backbone cost against resolution (measured, batch 1)')
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    fig.savefig(out_file, dpi=100)
    plt.close(fig)
    return out_file


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=osp.join(ROOT, 'docs', 'scaling.png'))
    parser.add_argument(
        '--sizes',
        type=int,
        nargs='+',
        default=[224, 448, 672, 896, 1120, 1344])
    parser.add_argument('--repeats', type=int, default=2)
    args = parser.parse_args(argv)
    rows = measure_scaling(args.sizes, args.repeats)
    plot(rows, args.out)
    with open(osp.splitext(args.out)[0] + '.json', 'w') as f:
        json.dump(rows, f, indent=1)
    print(f'written {args.out}')
    return rows


if __name__ == '__main__':
    main()
