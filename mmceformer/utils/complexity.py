"""Parameters and MACs of a model as it really runs.

Counts the multiply-accumulates of every matrix product and convolution
that executes (``torch.utils.flop_counter``), so attention is included
(``scaled_dot_product_attention``, which mmengine's counter reports as 0,
and the products of the linear kernel) and pruned blocks count the tokens
they keep for the given input. Element-wise operations are not counted, as
in mmengine/fvcore. Also the interleaved latency timer of the benchmark
tools. Used by ``tools/analysis/*.py`` and ``tools/benchmark_attention.py``.
"""
import statistics
import time
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch.utils.flop_counter import FlopCounterMode


def _sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of softmax attention from the shapes: Q K^T and A V."""
    *batch, num_q, dim = query
    num_k, dim_v = key[-2], value[-1]
    size = 1
    for b in batch:
        size *= b
    return 2 * size * num_q * num_k * (dim + dim_v)


def _custom_mapping():
    """Attention ops that torch's counter does not know on the CPU."""
    mapping = {}
    for name in ('_scaled_dot_product_flash_attention_for_cpu', ):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            mapping[op] = _sdpa_flops
    return mapping


def count_macs(fn) -> int:
    """MACs of everything ``fn()`` runs (FLOPs / 2)."""
    with FlopCounterMode(
            display=False, custom_mapping=_custom_mapping()) as counter:
        with torch.no_grad():
            fn()
    return counter.get_total_flops() // 2


#: The parts of a detector whose MACs and time are reported apart
#: (attributes of mmdet's detectors: two-stage heads, DETR's transformer).
DETECTOR_PARTS = ('backbone', 'neck', 'rpn_head', 'roi_head', 'encoder',
                  'decoder', 'bbox_head')


def count_macs_by_part(model, fn, parts: Sequence[str] = DETECTOR_PARTS
                       ) -> Dict[str, int]:
    """MACs of everything ``fn()`` runs, split into ``model``'s parts: the
    children named in ``parts`` (a child that is not itself called, as
    ``roi_head``, whose ``predict`` calls its own children, sums those),
    ``other`` (what runs outside them) and ``total``."""
    with FlopCounterMode(
            display=False, custom_mapping=_custom_mapping()) as counter:
        with torch.no_grad():
            fn()
    counts = {
        name: sum(ops.values()) // 2
        for name, ops in counter.get_flop_counts().items()
    }
    root = type(model).__name__
    result = {}
    for part in parts:
        if getattr(model, part, None) is None:
            continue
        name = f'{root}.{part}'
        if name in counts:
            result[part] = counts[name]
        else:
            result[part] = sum(
                v for k, v in counts.items()
                if k.startswith(name + '.') and k.count('.') == 2)
    total = counts.get('Global', 0)
    result['other'] = total - sum(result.values())
    result['total'] = total
    return result


def build_model(cfg: Config):
    """The config's model, in eval mode, on the CPU, and its scope."""
    scope = cfg.get('default_scope', 'mmpretrain')
    init_default_scope(scope)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    model_cfg = cfg.model.copy()
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    backbone = model_cfg.get('backbone', {})
    if isinstance(backbone, dict):
        backbone.pop('init_cfg', None)  # no checkpoint is needed to count
    model = registry.build(model_cfg)
    model.eval()
    return model, scope


def kept_tokens(backbone) -> Optional[list]:
    """Mean kept image tokens after each block of the last forward."""
    counts = getattr(backbone, 'token_counts', None)
    if not counts:
        return None
    return [float(c.float().mean()) for c in counts]


def measure(cfg, shape: Sequence[int], batch: int = 1) -> Dict:
    """Parameters and MACs of ``cfg``'s model for a (batch, 3, H, W) input.

    Returns a dict with ``params`` and ``macs`` of the ``backbone`` (+ neck
    for detection) and of the ``whole`` model, and the kept tokens per
    block (``tokens``) where the backbone prunes.
    """
    if isinstance(cfg, str):
        cfg = Config.fromfile(cfg)
    model, scope = build_model(cfg)
    inputs = torch.randn(batch, 3, *shape)
    result = dict(shape=tuple(shape), scope=scope)
    if scope == 'mmdet':
        feature_modules = [model.backbone] + ([model.neck] if getattr(
            model, 'with_neck', False) else [])
        from mmdet.structures import DetDataSample
        sample = DetDataSample(
            metainfo=dict(
                img_shape=tuple(shape),
                ori_shape=tuple(shape),
                pad_shape=tuple(shape),
                scale_factor=(1., 1.),
                batch_input_shape=tuple(shape)))
        samples = [sample] * batch

        def whole():
            return model(inputs, samples, mode='tensor')
    else:
        feature_modules = [model.backbone] + ([model.neck] if getattr(
            model, 'with_neck', False) and model.neck is not None else [])

        def whole():
            return model(inputs, mode='tensor')

    result['backbone_params'] = sum(p.numel() for m in feature_modules
                                    for p in m.parameters())
    result['params'] = sum(p.numel() for p in model.parameters())
    result['backbone_macs'] = count_macs(lambda: model.extract_feat(inputs))
    result['tokens'] = kept_tokens(model.backbone)
    if scope == 'mmdet':
        result['parts'] = count_macs_by_part(model, whole)
        result['macs'] = result['parts']['total']
    else:
        result['macs'] = count_macs(whole)
    return result


def format_result(result: Dict) -> str:
    lines = [f"input shape: {result['shape']}"]
    part = 'backbone + neck' if result['scope'] == 'mmdet' else 'backbone'
    lines.append(f"{part}: {result['backbone_params'] / 1e6:.2f} M params, "
                 f"{result['backbone_macs'] / 1e9:.3f} GMACs")
    lines.append(f"whole model: {result['params'] / 1e6:.2f} M params, "
                 f"{result['macs'] / 1e9:.3f} GMACs")
    if result.get('parts'):
        parts = ', '.join(f'{name} {macs / 1e9:.3f}'
                          for name, macs in result['parts'].items()
                          if name != 'total')
        lines.append(f'GMACs by part: {parts}')
    if result['tokens']:
        tokens = ' '.join(f'{t:.0f}' for t in result['tokens'])
        lines.append(f'kept image tokens after each block: {tokens}')
    return '\n'.join(lines)


def interleaved_latency(fns: Sequence,
                        warmup: int = 1,
                        repeats: int = 3,
                        device='cpu',
                        grad: bool = False) -> List[float]:
    """Median seconds of each ``fn()``, without gradients unless ``grad``
    (training steps). The calls are interleaved run by run (after ``warmup``
    rounds), so that the compared models share the machine's state; CUDA is
    synchronised around each."""
    device = torch.device(device)

    def timed(fn):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        return time.perf_counter() - start

    samples = [[] for _ in fns]
    with torch.set_grad_enabled(grad):
        for _ in range(warmup):
            for fn in fns:
                fn()
        for _ in range(repeats):
            for i, fn in enumerate(fns):
                samples[i].append(timed(fn))
    return [statistics.median(s) for s in samples]
