"""Draw which tokens E-Attention keeps at each pruning block, on an image.

    python tools/analysis/visualize_tokens.py IMAGE CONFIG CHECKPOINT
        [--out tokens.png] [--device cpu] [--cfg-options KEY=VALUE ...]

Works for detection and classification configs whose backbone is CEFormer
or EAttentionViT with a pruning ``attn_mode`` (``prune``/``eattn``). The image goes
through the config's test pipeline; one panel per pruning block shows the
network's input with the tokens that were not kept dimmed.
``--cfg-options`` changes the model as in tools/test.py, e.g.
``model.backbone.score=cls_v`` (sampling is parameter-free: any score runs
on the same checkpoint). tools/analysis/token_adaptivity.py measures over a
whole annotated set how much more often tokens on objects are kept.
"""
import argparse
import math
import os.path as osp
from typing import List, Optional, Tuple

import cv2
import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

import mmceformer  # noqa: F401
from mmceformer.models.layers import EAttention


def build(config: str,
          checkpoint: str,
          device: str = 'cpu',
          cfg_options: Optional[dict] = None):
    """The config's model with the checkpoint, in eval mode; returns
    (cfg, model, default scope)."""
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope', 'mmpretrain')
    init_default_scope(scope)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    model_cfg = cfg.model.copy()
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model_cfg.backbone.pop('init_cfg', None)
    model = registry.build(model_cfg)
    load_checkpoint(model, checkpoint, map_location='cpu')
    model.to(device)
    model.eval()
    return cfg, model, scope


def test_pipeline(cfg):
    steps = [dict(step) for step in cfg.test_dataloader.dataset.pipeline]
    # An arbitrary image has no annotations: drop that step.
    return Compose([s for s in steps if s['type'] != 'LoadAnnotations'])


def kept_tokens(config: str,
                checkpoint: str,
                image_path: str,
                device: str = 'cpu',
                cfg_options: Optional[dict] = None
                ) -> Tuple[np.ndarray, List[dict]]:
    """Build the model and run it on one image file; see :func:`kept_grids`.
    """
    built = build(config, checkpoint, device, cfg_options)
    return kept_grids(*built, image_path)


def kept_grids(cfg, model, scope: str,
               image_path: str) -> Tuple[np.ndarray, List[dict]]:
    """Run a built model (:func:`build`) on an image file; return the
    network input (h, w, 3 BGR, before padding) and, per pruning block, a
    dict with the block ``index`` and a ``kept`` (Hg, Wg) bool grid of the
    16 x 16 cells of that input."""
    records = []

    def hook(module, args, kwargs, output):
        if output.index is None:
            return
        # index points into the block's input sequence; pos maps that to
        # the original tokens (it differs after pruning in 'drop' mode).
        index = output.index[0][output.mask[0]]
        pos = kwargs.get('pos')
        if pos is not None:
            index = (pos if pos.dim() == 1 else pos[0])[index]
        records.append((module, index))

    handles = [
        m.register_forward_hook(hook, with_kwargs=True)
        for m in model.modules()
        if isinstance(m, EAttention) and m.prune_tokens
    ]
    if not handles:
        raise ValueError('the model has no pruning E-Attention block: use '
                         "attn_mode='prune' or 'eattn'")
    pipeline = test_pipeline(cfg)
    data = dict(img_path=image_path, img_id=0) if scope == 'mmdet' \
        else dict(img_path=image_path)
    data = pseudo_collate([pipeline(data)])
    try:
        with torch.no_grad():
            model.test_step(data)
    finally:
        for handle in handles:
            handle.remove()

    inputs = data['inputs'][0]  # (3, h, w), the resized image
    shown = inputs.permute(1, 2, 0).cpu().numpy().astype(np.uint8)
    if scope == 'mmdet':
        height, width = data['data_samples'][0].img_shape
        shown = shown[:height, :width]
    grid_h = math.ceil(shown.shape[0] / 16)
    grid_w = math.ceil(shown.shape[1] / 16)
    layers = {
        id(m): i
        for i, m in enumerate(
            m for m in model.modules() if isinstance(m, EAttention))
    }
    panels = []
    for module, index in records:
        prefix = module.num_prefix_tokens
        cells = index - prefix
        cells = cells[cells >= 0].cpu().numpy()
        pad_w = math.ceil(inputs.shape[-1] / 16)
        kept = np.zeros((math.ceil(inputs.shape[-2] / 16), pad_w), bool)
        kept.flat[cells] = True
        panels.append(
            dict(index=layers[id(module)], kept=kept[:grid_h, :grid_w]))
    return shown, panels


def draw(image: np.ndarray,
         panels: List[dict],
         out_file: str,
         title: str = 'tokens kept by E-Attention') -> str:
    """One panel per pruning block: kept tokens bright, others dimmed. A
    panel's ``note`` (str), if any, is added to its title; its ``objects``
    ((Hg, Wg) bool), if any, are outlined in white."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rgb = image[..., ::-1]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.4 * cols, 3.6 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis('off')
    for ax, panel in zip(axes.flat, panels):
        kept = np.kron(panel['kept'], np.ones((16, 16), bool))
        kept = kept[:rgb.shape[0], :rgb.shape[1]]
        dimmed = (rgb * np.where(kept[..., None], 1.0, 0.25)).astype(np.uint8)
        ax.imshow(dimmed)
        if panel.get('objects') is not None:
            cells = np.kron(panel['objects'], np.ones((16, 16)))
            ax.contour(
                cells[:rgb.shape[0], :rgb.shape[1]],
                levels=[0.5],
                colors='white',
                linewidths=0.8)
        total = panel['kept'].size
        note = f"\n{panel['note']}" if panel.get('note') else ''
        ax.set_title(
            f"block {panel['index']}: {panel['kept'].sum()}/"
            f'{total} kept{note}',
            fontsize=9)
    fig.suptitle(title, fontsize=10)
    height = 3.6 * rows + 0.4  # inches; keep room for the title lines
    top = 1 - (0.2 * (title.count('\n') + 1) + 0.05) / height
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(out_file, dpi=100)
    plt.close(fig)
    return out_file


def add_model_arguments(parser: argparse.ArgumentParser):
    """CONFIG CHECKPOINT [--device] [--cfg-options]: what :func:`build`
    takes, for the command lines of this tool and token_adaptivity.py."""
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. model.backbone.score=cls_v')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('image')
    add_model_arguments(parser)
    parser.add_argument('--out', default='tokens.png')
    args = parser.parse_args(argv)
    if cv2.imread(args.image) is None:
        raise ValueError(f'cannot read image {args.image}')
    shown, panels = kept_tokens(args.config, args.checkpoint, args.image,
                                args.device, args.cfg_options)
    draw(shown, panels, args.out)
    print(f'kept tokens of {len(panels)} pruning blocks drawn to '
          f'{osp.abspath(args.out)}')


if __name__ == '__main__':
    main()
