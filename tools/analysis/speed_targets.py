"""The speed targets of the project (issue 10), measured in one run:
latency of our backbones as ratios against mmpretrain's own DeiT-S and
Swin-T, MACs beside them.

    python tools/analysis/speed_targets.py [--shapes 224x224 800x1344]
        [--batch8] [--compile] [--repeats 5] [--threads 2]

Backbones only, random weights, eval, no gradients, CPU; the models of one
row group are timed interleaved (median of ``--repeats`` after a warm-up).
``--batch8`` adds batch 8 at 224x224 (throughput); ``--compile`` adds
``torch.compile``d models against the compiled baseline at 224x224.
Classification behaviour (``prune_mode='drop'``) except Swin and the
CEFormer rows of the Swin-T group (``skip``, as in the detection configs).
Nothing here is a test: numbers depend on the machine.
"""
import argparse

import torch

import mmceformer  # noqa: F401
from mmceformer.utils.allocator import (add_malloc_argument, malloc_note,
                                        set_malloc)
from mmceformer.utils.complexity import count_macs, interleaved_latency

DEIT = dict(type='VisionTransformer', arch='deit-small', img_size=224)
SWIN = dict(type='SwinTransformer', arch='tiny', img_size=224)
GROUPS = {
    'DeiT-S': [
        ('DeiT-S (mmpretrain)', DEIT, False),
        ('DeiT-S E-Attention', dict(DEIT, type='EAttentionViT', attn_mode='eattn'),
         False),
        ('CEFormer-S', dict(type='CEFormer', arch='s'), False),
        ('CEFormer-S deploy', dict(type='CEFormer', arch='s'), True),
    ],
    'Swin-T': [
        ('Swin-T (mmpretrain)', SWIN, False),
        ('Swin-T E-Attention',
         dict(SWIN, type='EAttentionSwin', attn_mode='eattn'), False),
        ('Swin-T linear', dict(SWIN, type='EAttentionSwin',
                               attn_mode='linear'), False),
        # attention over each stage's whole map instead of windows
        ('Swin-T E-Attention, stage scope',
         dict(SWIN, type='EAttentionSwin', attn_mode='eattn',
              attn_scope='stage'), False),
        ('Swin-T linear, stage scope',
         dict(SWIN, type='EAttentionSwin', attn_mode='linear',
              attn_scope='stage'), False),
        # the detection configs' CEFormer (dense maps: pruned tokens skip)
        ('CEFormer-S deploy, skip', dict(type='CEFormer', arch='s',
                                         prune_mode='skip'), True),
        ('CEFormer-S deploy, skip, FFN on kept tokens',
         dict(type='CEFormer', arch='s', prune_mode='skip',
              skip_ffn_input='kept_tokens'), True),
    ],
}


def build(cfg, deploy):
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.eval()
    if deploy:
        model.switch_to_deploy()
    return model


def measure(group, shape, batch, repeats, compile_=False):
    models = [(name, build(cfg, deploy)) for name, cfg, deploy in group]
    x = torch.randn(batch, 3, *shape)
    fns = []
    for _, model in models:
        if compile_:
            model = torch.compile(model)
        fns.append(lambda m=model: m(x))
    seconds = interleaved_latency(fns, 1, repeats)
    macs = [count_macs(lambda m=m: m(x)) for _, m in models]
    rows = []
    for (name, _), sec, mac in zip(models, seconds, macs):
        rows.append(
            dict(
                model=name,
                shape=f'{shape[0]}x{shape[1]}',
                batch=batch,
                compiled=compile_,
                gmacs=mac / 1e9 / batch,
                ms=1e3 * sec,
                macs_ratio=mac / macs[0],
                speedup=seconds[0] / sec))
    return rows


def format_rows(rows):
    lines = [
        '| model | input | batch | compiled | GMACs / image | MACs vs '
        'baseline | ms | speed-up vs baseline |', '|' + '---|' * 8
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['shape']} | {r['batch']} | "
                     f"{'yes' if r['compiled'] else 'no'} | "
                     f"{r['gmacs']:.2f} | {r['macs_ratio']:.2f} | "
                     f"{r['ms']:.1f} | {r['speedup']:.2f}x |")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--shapes', nargs='+', default=['224x224', '800x1344'])
    parser.add_argument('--groups', nargs='+', default=list(GROUPS))
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--batch8', action='store_true')
    parser.add_argument('--compile', action='store_true')
    add_malloc_argument(parser)
    args = parser.parse_args(argv)
    set_malloc(args.malloc)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'# CPU threads={torch.get_num_threads()}, torch '
          f'{torch.__version__}, median of {args.repeats}, '
          f'{malloc_note(args.malloc)}')
    rows = []
    for group in args.groups:
        for text in args.shapes:
            shape = tuple(int(v) for v in text.split('x'))
            rows += measure(GROUPS[group], shape, 1, args.repeats)
            print(format_rows(rows[-len(GROUPS[group]):]), flush=True)
        if args.batch8:
            rows += measure(GROUPS[group], (224, 224), 8, args.repeats)
            print(format_rows(rows[-len(GROUPS[group]):]), flush=True)
        if args.compile:
            rows += measure(
                GROUPS[group], (224, 224), 1, args.repeats, compile_=True)
            print(format_rows(rows[-len(GROUPS[group]):]), flush=True)
    print('\n' + format_rows(rows))
    return rows


if __name__ == '__main__':
    main()
