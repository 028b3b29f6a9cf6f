"""Whole-detector inference speed in mmdet's convention, several configs
interleaved in one run, and where each detector's time goes.

    python tools/analysis/benchmark_detector.py CONFIG [CONFIG ...] \
        [--checkpoints CKPT ...] [--image IMG | --image-size 1333 800] \
        [--repeats 5] [--warmup 2] [--fuse-conv-bn] [--deploy] \
        [--compile [--compile-backend inductor]] [--device cuda] \
        [--cfg-options model.backbone.keep_ratio=0.5]

As mmdet's ``InferenceBenchmark``: the image goes through each config's own
test pipeline (resize to 1333x800 keeping the ratio, padding to the
preprocessor's divisor), one image per batch, ``model.test_step``, warm-up
rounds first, then the median seconds per image and its images/s. Unlike
it, the configs run interleaved image by image, so that they share the
machine's state, and each is printed as a ratio to the first. Random
weights unless a checkpoint is given (the kept-token counts of token
sampling depend on the weights: say which were used).

The time is split into the detector's parts, timed around their calls:
``backbone``, ``neck``, the two-stage heads (``rpn_head``, ``roi_head``) or
Deformable DETR's ``encoder``, ``decoder`` and ``bbox_head``, and
``other`` (preprocessing, the transformer's pre/post steps, result
packing): a ratio the backbone cannot move shows as such. ``pyramid`` (the
simple feature pyramid of a plain backbone, ``backbone.pyramid``) is a part
of ``backbone``'s time, printed beside it, not added to the sum.
``detections`` counts the instances predicted for the image: with random
weights it differs between backbones, and the heads' work after the
proposals with it.

``--deploy`` puts every backbone that has ``switch_to_deploy()`` (CEFormer:
the stem's BatchNorm folded, the depthwise branches merged, exact to 1e-5)
into that form after its weights are loaded; the others run as built.

``--compile`` compiles every backbone's forward with ``torch.compile``
(``--compile-backend``, inductor by default; the warm-up rounds include
the compilation, so give at least one): the rest of the detector, mmdet's
and mmcv's code, stays eager. The parts inside the backbone (``pyramid``) are then inside its
graph and not timed apart.
"""
import argparse
import functools
import logging
import statistics
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import Compose, pseudo_collate
from mmengine.logging import MMLogger
from mmengine.runner import load_checkpoint

import mmceformer  # noqa: F401
from mmceformer.utils.allocator import (add_malloc_argument, malloc_note,
                                        set_malloc)
from mmceformer.utils.complexity import build_model

#: (part, attribute of the detector, method timed)
PARTS = (
    ('backbone', 'backbone', 'forward'),
    ('pyramid', 'backbone.pyramid', 'forward'),
    ('neck', 'neck', 'forward'),
    ('rpn_head', 'rpn_head', 'predict'),
    ('roi_head', 'roi_head', 'predict'),
    ('encoder', 'encoder', 'forward'),
    ('decoder', 'decoder', 'forward'),
    ('bbox_head', 'bbox_head', 'predict'),
)
#: parts timed inside another part: printed, not added to the total
NESTED = {'pyramid': 'backbone'}


def build_detector(cfg: Config,
                   checkpoint: Optional[str],
                   device: str,
                   fuse_conv_bn: bool,
                   deploy: bool = False,
                   compile_backend: Optional[str] = None):
    """The config's detector (no ImageNet checkpoint) in eval mode on
    ``device``, with ``checkpoint`` or the config's initialisation; with
    ``deploy``, its backbone's ``switch_to_deploy()`` form where it has
    one; with ``compile_backend``, its backbone's forward compiled by
    ``torch.compile`` with that backend."""
    model, _ = build_model(cfg)
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu')
    else:  # quietly: mmengine logs every parameter's init at INFO
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)
    if fuse_conv_bn:
        from mmcv.cnn import fuse_conv_bn as fuse
        model = fuse(model)
    model = model.to(device).eval()
    if deploy and hasattr(model.backbone, 'switch_to_deploy'):
        model.backbone.switch_to_deploy()
    if compile_backend:
        model.backbone.forward = torch.compile(
            model.backbone.forward, backend=compile_backend)
    return model


def test_inputs(cfg: Config, image: np.ndarray) -> dict:
    """One image through the config's test pipeline, loaded from memory as
    mmdet's ``inference_detector`` does."""
    from mmdet.utils import get_test_pipeline_cfg
    steps = [dict(step) for step in get_test_pipeline_cfg(cfg)]
    steps[0] = dict(type='mmdet.LoadImageFromNDArray')
    steps = [s for s in steps if 'LoadAnnotations' not in s['type']]
    data = Compose(steps)(dict(img=image, img_id=0))
    return pseudo_collate([data])


class PartTimer:
    """Seconds spent in each part of a detector, call by call; ``nested``
    False leaves out the parts inside another (:data:`NESTED`), as a
    compiled backbone's, whose calls are inside its graph."""

    def __init__(self, model, device: str, nested: bool = True):
        self.samples: Dict[str, List[float]] = {}
        self.sync = torch.device(device).type == 'cuda'
        for part, attr, method in PARTS:
            if part in NESTED and not nested:
                continue
            module = model
            for name in attr.split('.'):
                module = getattr(module, name, None)
            if module is None or not hasattr(module, method):
                continue
            self.samples[part] = []
            setattr(module, method,
                    self._timed(part, getattr(module, method)))

    def _timed(self, part, fn):

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if self.sync:
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            if self.sync:
                torch.cuda.synchronize()
            self.samples[part].append(time.perf_counter() - start)
            return out

        return wrapper

    def reset(self):
        for times in self.samples.values():
            times.clear()


def benchmark(configs: Sequence[Config],
              image: np.ndarray,
              checkpoints: Optional[Sequence[Optional[str]]] = None,
              repeats: int = 5,
              warmup: int = 2,
              device: str = 'cpu',
              fuse_conv_bn: bool = False,
              deploy: bool = False,
              compile_backend: Optional[str] = None) -> List[Dict]:
    """Per config: ``seconds`` (median per image), ``fps``, ``ratio`` (FPS
    against the first config), ``parts`` (median seconds per part, with
    ``other`` the median of the rest of each image's time; medians, so the
    parts but the :data:`NESTED` ones add up to about the total) and
    ``detections``, the instances predicted for the image: the heads' work
    after the proposals (Mask R-CNN's mask head runs on each) depends on
    it, and so on the weights."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f'repeats must be >= 1 and warmup >= 0, got '
                         f'{repeats} and {warmup}')
    if compile_backend and warmup < 1:
        raise ValueError('compiling needs warmup >= 1 (the first call '
                         f'compiles), got warmup={warmup}')
    checkpoints = list(checkpoints or [None] * len(configs))
    if len(checkpoints) != len(configs):
        raise ValueError(f'{len(checkpoints)} checkpoints for '
                         f'{len(configs)} configs')
    runs = []
    for cfg, ckpt in zip(configs, checkpoints):
        model = build_detector(cfg, ckpt, device, fuse_conv_bn, deploy,
                               compile_backend)
        runs.append(
            dict(
                model=model,
                data=test_inputs(cfg, image),
                # a compiled backbone's inner parts are in its graph
                timer=PartTimer(model, device, nested=not compile_backend),
                seconds=[]))
    sync = torch.device(device).type == 'cuda'
    with torch.no_grad():
        for round_ in range(warmup + repeats):
            for run in runs:
                if round_ == warmup:
                    run['timer'].reset()
                if sync:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                out = run['model'].test_step(run['data'])
                if sync:
                    torch.cuda.synchronize()
                if round_ >= warmup:
                    run['seconds'].append(time.perf_counter() - start)
                run['detections'] = len(out[0].pred_instances)
    results = []
    for run in runs:
        samples = run['timer'].samples
        # a part may run more than once per image (none does in mmdet's
        # detectors): its time per image is the sum of its calls
        per_image = {}
        for part, times in samples.items():
            calls = len(times) // repeats  # per image
            per_image[part] = [
                sum(times[i * calls:(i + 1) * calls]) for i in range(repeats)
            ]
        other = [
            total - sum(p[i] for part, p in per_image.items()
                        if part not in NESTED)
            for i, total in enumerate(run['seconds'])
        ]
        parts = {p: statistics.median(t) for p, t in per_image.items()}
        parts['other'] = max(0., statistics.median(other))
        seconds = statistics.median(run['seconds'])
        results.append(
            dict(
                seconds=seconds,
                fps=1 / seconds,
                parts=parts,
                detections=run['detections']))
    for result in results:
        result['ratio'] = result['fps'] / results[0]['fps']
    return results


def synthetic_image(width: int, height: int) -> np.ndarray:
    """A reproducible (H, W, 3) uint8 image of smooth random texture."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3))
    image = np.kron(small, np.ones((16, 16, 1)))[:height, :width]
    return image.astype(np.uint8)


def table(names: Sequence[str], results: Sequence[Dict]) -> str:
    parts = []
    for result in results:
        parts += [p for p in result['parts'] if p not in parts]
    head = '| config | s / image | images/s | ratio | detections | ' + \
        ' | '.join(f'{p} s' for p in parts) + ' |'
    lines = [head, '|' + '---|' * (5 + len(parts))]
    for name, result in zip(names, results):
        cells = [
            f"{result['parts'][p]:.3f}" if p in result['parts'] else '-'
            for p in parts
        ]
        lines.append(f"| {name} | {result['seconds']:.3f} | "
                     f"{result['fps']:.3f} | {result['ratio']:.2f}x | "
                     f"{result['detections']} | " +
                     ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--checkpoints', nargs='+')
    parser.add_argument('--image', help='an image file (default: synthetic)')
    parser.add_argument(
        '--image-size',
        type=int,
        nargs=2,
        default=[1333, 800],
        metavar=('W', 'H'),
        help='size of the synthetic image')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--fuse-conv-bn', action='store_true')
    parser.add_argument(
        '--deploy',
        action='store_true',
        help="backbones with switch_to_deploy() in that (exact) form")
    parser.add_argument(
        '--compile',
        action='store_true',
        help='compile every backbone with torch.compile')
    parser.add_argument(
        '--compile-backend',
        default='inductor',
        help="torch.compile's backend with --compile")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    add_malloc_argument(parser)
    args = parser.parse_args(argv)
    set_malloc(args.malloc)
    if args.image:
        import mmcv
        image = mmcv.imread(args.image)
    else:
        image = synthetic_image(*args.image_size)
    configs = []
    for path in args.configs:
        cfg = Config.fromfile(path)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        configs.append(cfg)
    backend = args.compile_backend if args.compile else None
    results = benchmark(configs, image, args.checkpoints, args.repeats,
                        args.warmup, args.device, args.fuse_conv_bn,
                        args.deploy, backend)
    print(f'{image.shape[1]}x{image.shape[0]} image, batch 1, '
          f'{args.device}, {torch.get_num_threads()} threads, median of '
          f'{args.repeats} after {args.warmup} warm-up, interleaved; '
          + ('checkpoints given' if args.checkpoints else 'random weights')
          + f'; {malloc_note(args.malloc)}'
          + ('; backbones in deploy form where they have one'
             if args.deploy else '')
          + (f'; backbones compiled ({backend})' if backend else '')
          + ('; pyramid s is part of backbone s' if any(
              'pyramid' in r['parts'] for r in results) else ''))
    print(table(args.configs, results))
    return results


if __name__ == '__main__':
    main()
