"""Thesis tables 3-4, 4-2, 4-3 and 4-7 with our measured parameters and
MACs beside the thesis's figures, as Markdown (also written to
docs/tables.md).

    python tools/analysis/reproduce_tables.py [--out docs/tables.md]

Accuracy and mAP need ImageNet/COCO training on GPUs: those columns are the
thesis's, marked "(thesis)". Params and MACs are measured here from our
configs (random weights: the number of tokens that pruning keeps depends on
the attention, so a trained model may keep fewer). A row whose measured
figure differs from the thesis's by more than 10% says so.

The whole-detector speed tables (3-6 and 4-7's FPS, timed by
``tools/analysis/benchmark_detector.py``) follow :data:`TIMED_MARKER` in
the output file; they are kept as they are when the file is rewritten.
"""
import argparse
import os
import os.path as osp
from typing import Callable, Dict, List, Optional

from mmengine.config import Config

import mmceformer  # noqa: F401
from mmceformer.utils.complexity import measure

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MODES = ('softmax', 'linear', 'prune', 'eattn')
MODE_NAMES = dict(
    softmax='base', linear='+ linear', prune='+ prune', eattn='+ E-Attention')

# Thesis figures (SPEC section 4). FLOPs in the thesis are multiply-adds.
TABLE_3_4 = {  # GFLOPs at 224 x 224: base / linear / prune / E-Attention
    'DeiT-B': ('cls_deit_b_{}_in1k.py', (17.5, 8.4, 11.9, 6.5)),
    'Swin-S': ('cls_swin_s_{}_in1k.py', (8.7, 4.3, 5.7, 3.3)),
}
TABLE_4_2 = [  # model, config, depth, dim, GFLOPs, params (M)
    ('CEFormer-S', 'cls_ceformer_s_in1k.py', 12, 384, 3.8, 28),
    ('CEFormer-M', 'cls_ceformer_m_in1k.py', 24, 384, 6.8, 55),
    ('CEFormer-L', 'cls_ceformer_l_in1k.py', 24, 512, 14.1, 92),
]
TABLE_4_3 = [  # setting, config, top-1 (thesis), GFLOPs
    ('Full', 'cls_ceformer_s_in1k.py', 83.6, 3.8),
    ('w/o C1', 'cls_ceformer_s_wo_c1_in1k.py', 83.4, 3.7),
    ('w/o C2', 'cls_ceformer_s_wo_c2_in1k.py', 83.3, 3.6),
    ('w/o C3', 'cls_ceformer_s_wo_c3_in1k.py', 83.3, 3.6),
    ('w/o C4', 'cls_ceformer_s_wo_c4_in1k.py', 83.1, 3.4),
]
TABLE_4_7 = [  # model, config, box mAP (thesis), params (M), GFLOPs
    ('CEFormer-S', 'mask_rcnn_ceformer_s_coco.py', 46.9, 48, 201),
    ('CEFormer-M', 'mask_rcnn_ceformer_m_coco.py', 48.1, 64, 326),
    ('CEFormer-L', 'mask_rcnn_ceformer_l_coco.py', 48.8, 102, 434),
]


def gap(ours: float, thesis: float) -> str:
    """'' when within 10%, else a note with the relative difference."""
    diff = (ours - thesis) / thesis
    return '' if abs(diff) <= 0.10 else f'disagrees by {diff:+.0%}'


def gaps(**pairs) -> List[str]:
    """'NAME disagrees by X%' for each (ours, thesis) pair off by > 10%."""
    return [
        f'{name} {gap(ours, thesis)}'
        for name, (ours, thesis) in pairs.items() if gap(ours, thesis)
    ]


def load(name: str, override: Optional[Callable] = None) -> Config:
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    if override is not None:
        override(cfg)
    return cfg


def table_3_4(measure_fn, shape) -> List[str]:
    lines = [
        f'### Table 3-4: GMACs at {shape[0]}x{shape[1]}, ours (thesis)', '',
        '| model | ' + ' | '.join(MODE_NAMES[m] for m in MODES) + ' | notes |',
        '|---' * (len(MODES) + 2) + '|'
    ]
    for model, (pattern, thesis) in TABLE_3_4.items():
        cells, notes = [], []
        for mode, reference in zip(MODES, thesis):
            macs = measure_fn(pattern.format(mode), shape)['macs'] / 1e9
            cells.append(f'{macs:.2f} ({reference})')
            note = gap(macs, reference)
            if note:
                notes.append(f'{MODE_NAMES[mode]} {note}')
        lines.append(f"| {model} | {' | '.join(cells)} | "
                     f"{'; '.join(notes)} |")
    return lines


def table_4_2(measure_fn, shape) -> List[str]:
    lines = [
        f'### Table 4-2: CEFormer sizes at {shape[0]}x{shape[1]}', '',
        '| model | depth | dim | params M (thesis) | GMACs (thesis) | '
        'notes |', '|---|---|---|---|---|---|'
    ]
    for model, config, depth, dim, gflops, params in TABLE_4_2:
        result = measure_fn(config, shape)
        ours_p, ours_g = result['params'] / 1e6, result['macs'] / 1e9
        notes = gaps(params=(ours_p, params), MACs=(ours_g, gflops))
        lines.append(f'| {model} | {depth} | {dim} | {ours_p:.1f} ({params}) '
                     f'| {ours_g:.2f} ({gflops}) | {"; ".join(notes)} |')
    return lines


def table_4_3(measure_fn, shape) -> List[str]:
    lines = [
        f'### Table 4-3: CEFormer-S ablation at {shape[0]}x{shape[1]}', '',
        '| setting | top-1 % (thesis) | params M | GMACs (thesis) | notes |',
        '|---|---|---|---|---|'
    ]
    for setting, config, top1, gflops in TABLE_4_3:
        result = measure_fn(config, shape)
        ours = result['macs'] / 1e9
        lines.append(f'| {setting} | {top1} | {result["params"] / 1e6:.1f} | '
                     f'{ours:.2f} ({gflops}) | {gap(ours, gflops)} |')
    return lines


def table_4_7(measure_fn, shape) -> List[str]:
    lines = [
        f'### Table 4-7: Mask R-CNN on COCO, input {shape[0]}x{shape[1]}', '',
        '| backbone | box mAP (thesis) | params M (thesis) | '
        'GMACs (thesis) | backbone + neck GMACs | notes |',
        '|---|---|---|---|---|---|'
    ]
    for model, config, box_map, params, gflops in TABLE_4_7:
        result = measure_fn(config, shape)
        ours_p, ours_g = result['params'] / 1e6, result['macs'] / 1e9
        notes = gaps(params=(ours_p, params), MACs=(ours_g, gflops))
        lines.append(
            f'| {model} | {box_map} | {ours_p:.1f} ({params}) | '
            f'{ours_g:.1f} ({gflops}) | {result["backbone_macs"] / 1e9:.1f} '
            f'| {"; ".join(notes)} |')
    return lines


def build_tables(
    override: Optional[Callable] = None,
    cls_shape=(224, 224),
    det_shape=(800, 1280)
) -> str:
    """All four tables as Markdown. ``override(cfg)`` may shrink models
    (the tests do)."""
    cache: Dict = {}

    def measure_fn(config, shape):
        key = (config, tuple(shape))
        if key not in cache:
            cache[key] = measure(load(config, override), shape)
        return cache[key]

    parts = [
        '# Thesis tables: measured beside the thesis', '',
        'Generated by `tools/analysis/reproduce_tables.py`. Figures in '
        'parentheses are the thesis\'s; the others are measured from our '
        'configs with random weights (MACs of every matrix product and '
        'convolution that runs, attention included; pruned blocks count '
        'the tokens they keep). Accuracy and mAP are the thesis\'s only.', ''
    ]
    for table, shape in ((table_3_4, cls_shape), (table_4_2, cls_shape),
                         (table_4_3, cls_shape), (table_4_7, det_shape)):
        parts += table(measure_fn, shape) + ['']
    return '\n'.join(parts)


#: Where the timed tables start in docs/tables.md (kept on rewriting).
TIMED_MARKER = '<!-- timed tables: tools/analysis/benchmark_detector.py -->'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=osp.join(ROOT, 'docs', 'tables.md'))
    args = parser.parse_args(argv)
    text = build_tables()
    print(text)
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    timed = ''
    if osp.exists(args.out):
        with open(args.out) as f:
            old = f.read()
        if TIMED_MARKER in old:
            timed = '\n' + old[old.index(TIMED_MARKER):]
    with open(args.out, 'w') as f:
        f.write(text + timed)
    return text


if __name__ == '__main__':
    main()
