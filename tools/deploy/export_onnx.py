"""Export a model of a config to ONNX and check it with onnxruntime.

    python tools/deploy/export_onnx.py CONFIG [CHECKPOINT] --shape H W \\
        --out model.onnx [--backbone-only] [--dynamic] [--opset 17]

Exports a classifier (backbone + neck + head: class scores) or, with
``--backbone-only``, the backbone alone (its maps: the pyramid a detector's
neck takes). The model is put in deploy form first where the backbone has
one (``switch_to_deploy()``). Token sampling exports in its static form (R
slots per pruning block, duplicates masked; see ``mmceformer.ops.
sample_tokens``), so the graph keeps each image's own tokens.

The file is then run in onnxruntime on inputs other than the export
example (random, and a toy picture of shapes), and the tool prints the max
abs difference to PyTorch and the onnxruntime / PyTorch latency ratio.

``--dynamic`` makes the batch axis dynamic. Height and width are fixed by
``--shape``: the trace computes the position-embedding resize (mmpretrain's
``resize_pos_embed``), Swin's window padding and, in the pruning modes, R
from the input size as Python numbers; export once per deployment size.
"""
import argparse
import inspect
import os
import sys
import time

import numpy as np
import torch
from mmengine.config import Config

import mmceformer  # noqa: F401
from mmceformer.utils.complexity import build_model, interleaved_latency


class ExportWrapper(torch.nn.Module):
    """A plain ``inputs -> tensors`` module for the exporter."""

    def __init__(self, model, backbone_only: bool):
        super().__init__()
        self.model = model
        self.backbone_only = backbone_only

    def forward(self, inputs):
        if self.backbone_only:
            return tuple(self.model.backbone(inputs))
        return self.model(inputs, mode='tensor')


def load_for_export(config, checkpoint=None, backbone_only=False):
    """The config's model in eval and deploy form, wrapped for export."""
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    if cfg.get('default_scope') == 'mmdet' and not backbone_only:
        raise ValueError('detectors export as --backbone-only (their '
                         'post-processing is mmdet\'s, not this tool\'s)')
    model, _ = build_model(cfg)
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu')
    if hasattr(model.backbone, 'switch_to_deploy'):
        model.backbone.switch_to_deploy()
    model.eval()
    # eval as a whole: the exporter restores the wrapper's mode afterwards
    return ExportWrapper(model, backbone_only).eval()


def export_kwargs() -> dict:
    """``dynamo=False`` where torch has the choice (2.5 on): the
    TorchScript-based exporter, which traces the eager code."""
    if 'dynamo' in inspect.signature(torch.onnx.export).parameters:
        return dict(dynamo=False)
    return {}


def export(wrapper, example, out, opset=17, dynamic=False):
    """``torch.onnx.export`` with the TorchScript-based exporter (which
    traces the eager code; the static sampling path is taken because
    ``is_tracing()`` is True during the trace). Returns the output names."""
    with torch.no_grad():
        outputs = wrapper(example)
    outputs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
    names = [f'output{i}' for i in range(len(outputs))]
    axes = None
    if dynamic:  # the batch axis; H and W are fixed by the trace
        axes = {name: {0: 'batch'} for name in ['input'] + names}
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (example, ),
            out,
            input_names=['input'],
            output_names=names,
            dynamic_axes=axes,
            opset_version=opset,
            **export_kwargs())
    return names


def toy_picture(shape, seed=0):
    """A toy picture (shapes on a textured background), normalised as the
    configs' data preprocessors do: (1, 3, H, W) float."""
    from mmceformer.datasets.toy_shapes import make_image
    image, _ = make_image(np.random.default_rng(seed), *shape)
    rgb = torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1).float()
    mean = torch.tensor([123.675, 116.28, 103.53])[:, None, None]
    std = torch.tensor([58.395, 57.12, 57.375])[:, None, None]
    return ((rgb - mean) / std)[None]


def check_inputs(shape, batch=1):
    """Inputs other than the export example (which is ``randn`` of seed
    0): two random tensors and a toy picture."""
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    return [torch.randn(batch, 3, *shape, generator=g) for g in gens] + [
        toy_picture(shape, seed=3).expand(batch, -1, -1, -1).contiguous()
    ]


def ort_session(path):
    """An onnxruntime CPU session of the file at torch's thread count,
    whose workers do not spin between runs (by default they do, which
    takes the cores from PyTorch's interleaved runs)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return ort.InferenceSession(
        path, options, providers=['CPUExecutionProvider'])


def compare(wrapper, path, inputs, repeats=5):
    """Max abs difference onnxruntime vs PyTorch over ``inputs`` and the
    latency ratio (onnxruntime / PyTorch, median, interleaved)."""
    session = ort_session(path)
    max_diff = 0.
    for x in inputs:
        with torch.no_grad():
            ref = wrapper(x)
        ref = ref if isinstance(ref, (tuple, list)) else [ref]
        got = session.run(None, {'input': x.numpy()})
        for r, g in zip(ref, got):
            max_diff = max(max_diff,
                           float(np.abs(r.numpy() - g).max()) if r.numel()
                           else 0.)
    x = inputs[0]
    feed = {'input': x.numpy()}
    torch_s, ort_s = interleaved_latency(
        [lambda: wrapper(x), lambda: session.run(None, feed)], 1, repeats)
    return max_diff, ort_s / torch_s


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?', default=None)
    parser.add_argument('--shape', type=int, nargs=2, default=[224, 224])
    parser.add_argument('--out', required=True)
    parser.add_argument('--backbone-only', action='store_true')
    parser.add_argument(
        '--dynamic', action='store_true', help='dynamic batch axis')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--repeats', type=int, default=5)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    wrapper = load_for_export(args.config, args.checkpoint,
                              args.backbone_only)
    example = torch.randn(
        1, 3, *args.shape, generator=torch.Generator().manual_seed(0))
    start = time.time()
    export(wrapper, example, args.out, args.opset, args.dynamic)
    print(f'exported {args.out} ({os.path.getsize(args.out) / 2**20:.1f} '
          f'MiB) in {time.time() - start:.1f} s')
    max_diff, ratio = compare(wrapper, args.out, check_inputs(args.shape),
                              args.repeats)
    print(f'onnxruntime vs PyTorch on 3 other inputs: max abs diff '
          f'{max_diff:.2e}; latency onnxruntime / PyTorch {ratio:.2f}')
    return max_diff, ratio


if __name__ == '__main__':
    sys.path.insert(0, os.getcwd())
    main()
