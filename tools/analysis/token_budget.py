"""Tokens each pruning block keeps in training against evaluation, for
each way of drawing in training (``train_draws``).

    python tools/analysis/token_budget.py CONFIG [--checkpoint CKPT] \
        [--shape 224 224] [--batch 8] [--repeats 5] [--data] \
        [--cfg-options model.backbone.keep_ratio=0.5]

Evaluation draws the grid ``u_k = (k + 1/2) / R``; training draws at
random, ``'systematic'`` (one offset per image) or ``'independent'`` (R
uniforms). A model evaluated with more tokens than it was trained on
learns its late blocks on another input than it is judged on, so the two
should agree. Prints, per pruning block, the mean kept image tokens in
evaluation and, for each option, in training (mean over images and
``--repeats`` forwards) with its ratio to evaluation. Images are standard
normal noise, or with ``--data`` the first batch of the config's
validation set through the model's preprocessor (what a trained
checkpoint's scores are meant for).
"""
import argparse
import copy
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.runner import Runner, load_checkpoint

import mmceformer  # noqa: F401
from mmceformer.ops import TRAIN_DRAWS
from mmceformer.utils.complexity import build_model


def pruning_counts(backbone) -> List[float]:
    """Mean kept image tokens of each pruning block of the last forward."""
    return [
        float(backbone.token_counts[i].float().mean())
        for i in backbone.prune_layers
    ]


def mean_counts(backbone, images, training: bool,
                repeats: int) -> List[float]:
    """Mean over ``repeats`` forwards (one seed each) of
    :func:`pruning_counts`; the backbone alone in train or eval mode."""
    backbone.train(training)
    totals = None
    with torch.no_grad():
        for seed in range(repeats):
            torch.manual_seed(seed)
            backbone(images)
            counts = pruning_counts(backbone)
            totals = counts if totals is None else [
                t + c for t, c in zip(totals, counts)
            ]
    backbone.eval()
    return [t / repeats for t in totals]


def load_images(cfg, model, shape: Sequence[int], batch: int,
                data: bool) -> torch.Tensor:
    if not data:
        gen = torch.Generator().manual_seed(0)
        return torch.randn(batch, 3, *shape, generator=gen)
    loader_cfg = copy.deepcopy(cfg.val_dataloader)
    loader_cfg.batch_size = batch
    loader = Runner.build_dataloader(loader_cfg)
    inputs = model.data_preprocessor(next(iter(loader)), False)['inputs']
    return inputs


def budget(cfg: Config,
           checkpoint: Optional[str] = None,
           shape: Sequence[int] = (224, 224),
           batch: int = 8,
           repeats: int = 5,
           data: bool = False) -> Dict:
    """Kept tokens per pruning block: ``{'blocks': [...], 'eval': [...],
    'train': {option: [...]}}`` for the config's backbone (and checkpoint)."""
    model, _ = build_model(cfg)
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu')
    else:  # the config's initialisation, as training starts from it
        model.init_weights()
    backbone = model.backbone
    if not getattr(backbone, 'prune_layers', None) or not any(
            getattr(m, 'prune_tokens', False) for m in backbone.modules()):
        raise ValueError('the backbone of this config does not sample '
                         "tokens (attn_mode 'prune' or 'eattn')")
    images = load_images(cfg, model, shape, batch, data)
    result = dict(
        blocks=list(backbone.prune_layers),
        eval=mean_counts(backbone, images, False, 1),
        train={})
    for option in TRAIN_DRAWS:
        for module in backbone.modules():
            if hasattr(module, 'train_draws'):
                module.train_draws = option
        result['train'][option] = mean_counts(backbone, images, True,
                                              repeats)
    return result


def table(result: Dict) -> str:
    options = list(result['train'])
    head = '| block | eval | ' + ' | '.join(
        f'train {o} (ratio)' for o in options) + ' |'
    lines = [head, '|' + '---|' * (2 + len(options))]
    for i, block in enumerate(result['blocks']):
        ev = result['eval'][i]
        cells = [
            f"{result['train'][o][i]:.1f} ({result['train'][o][i] / ev:.2f})"
            for o in options
        ]
        lines.append(f'| {block + 1} | {ev:.1f} | ' + ' | '.join(cells) +
                     ' |')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--checkpoint')
    parser.add_argument('--shape', type=int, nargs=2, default=[224, 224])
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument(
        '--data',
        action='store_true',
        help='images from the config\'s validation set instead of noise')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        parser.error('--batch and --repeats must be >= 1')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    torch.manual_seed(0)
    result = budget(cfg, args.checkpoint, args.shape, args.batch,
                    args.repeats, args.data)
    print(f'{args.config}: kept image tokens per pruning block (blocks '
          'counted from 1), mean over '
          f'{args.batch} images' + (f' x {args.repeats} forwards' if
                                    args.repeats > 1 else ''))
    print(table(result))
    return result


if __name__ == '__main__':
    main()
