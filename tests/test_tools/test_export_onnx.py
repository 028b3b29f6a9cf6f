"""ONNX export: every backbone x attention mode exports (static-shape token
sampling) and onnxruntime reproduces PyTorch's eval outputs and kept-token
counts on inputs whose sampling keeps other tokens than the example's."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BACKBONE_VARIANTS, TINY
from helpers import images, in_mode, peaked_attention
from mmengine.config import Config
from mmpretrain.registry import MODELS

ort = pytest.importorskip('onnxruntime')
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tools' / 'deploy'))
import export_onnx  # noqa: E402

# Dense outputs where the backbone has them (what a detector exports).
OPTIONS = {
    'EAttentionViT': dict(out_type='pyramid', prune_mode='skip'),
    'CEFormer': dict(out_type='cls_token', prune_mode='drop'),
    'EAttentionSwin': dict(out_indices=(0, 1, 2, 3)),
}
# CEFormer's tokens are 16x16 pixels: 128x128 gives an 8x8 grid, enough for
# images to differ in the tokens they keep.
SIZES = {'CEFormer': (128, 128)}


class WithCounts(torch.nn.Module):
    """Backbone outputs plus the kept-token count of every block."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        outs = tuple(self.backbone(x))
        return outs + (torch.stack(self.backbone.token_counts, 1), )


def kept_sets(model, x, monkeypatch):
    """The token sets that every sampling call keeps for ``x`` (eager)."""
    # (the package attributes of these names are the functions)
    op_module = sys.modules['mmceformer.ops.e_attention']
    layer_module = sys.modules['mmceformer.models.layers.e_attention']
    real = op_module.sample_tokens
    records = []

    def recording(*args, **kwargs):
        index, mask = real(*args, **kwargs)
        records.append([i[m].tolist() for i, m in zip(index, mask)])
        return index, mask

    with monkeypatch.context() as patch:
        patch.setattr(op_module, 'sample_tokens', recording)
        patch.setattr(layer_module, 'sample_tokens', recording)
        with torch.no_grad():
            model(x)
    return records


def run_onnx(path, x):
    session = ort.InferenceSession(
        str(path), providers=['CPUExecutionProvider'])
    return session.run(None, {'input': x.numpy()})


@pytest.mark.parametrize('name,mode,extra', BACKBONE_VARIANTS)
def test_backbone_exports_and_matches_onnxruntime(name, mode, extra, tmp_path,
                                                  monkeypatch):
    torch.manual_seed(0)
    backbone = in_mode(
        MODELS.build(
            dict(
                type=name,
                attn_mode=mode,
                **TINY[name],
                **OPTIONS[name],
                **extra)),
        training=False)
    peaked_attention(backbone)
    model = WithCounts(backbone).eval()
    size = SIZES.get(name, (64, 64))
    example = images(batch=2, size=size, seed=0)
    path = tmp_path / 'model.onnx'
    torch.onnx.export(
        model, (example, ),
        str(path),
        input_names=['input'],
        opset_version=17,
        **export_onnx.export_kwargs())
    kept = []
    for seed in (1, 2, 3):
        x = images(batch=2, size=size, seed=seed) * (1 + seed)
        with torch.no_grad():
            expected = model(x)
        got = run_onnx(path, x)
        assert len(got) == len(expected)
        for e, g in zip(expected[:-1], got[:-1]):
            np.testing.assert_allclose(g, e.numpy(), atol=1e-4, rtol=1e-4)
        np.testing.assert_array_equal(got[-1], expected[-1].numpy())
        kept.append(kept_sets(model, x, monkeypatch))
    if mode in ('prune', 'eattn'):
        # The inputs keep other tokens than the example, so the graph that
        # matched them did not bake in the example's sampling.
        example_kept = kept_sets(model, example, monkeypatch)
        assert example_kept and all(k != example_kept for k in kept)


def test_export_tool_on_a_config(shrink_config, tmp_path, capsys):
    cfg = Config.fromfile(str(ROOT / 'configs' / 'cls_deit_s_eattn_in1k.py'))
    shrink_config(cfg)
    wrapper = export_onnx.load_for_export(cfg)
    path = str(tmp_path / 'cls.onnx')
    example = images(batch=1, seed=0)
    names = export_onnx.export(wrapper, example, path)
    assert names == ['output0']
    max_diff, ratio = export_onnx.compare(
        wrapper, path, export_onnx.check_inputs((64, 64)), repeats=1)
    assert max_diff < 1e-4 and ratio > 0


def test_export_tool_refuses_a_whole_detector():
    cfg = Config.fromfile(
        str(ROOT / 'configs' / 'toy' / 'mask_rcnn_ceformer_toy.py'))
    with pytest.raises(ValueError, match='backbone-only'):
        export_onnx.load_for_export(cfg)


@pytest.mark.parametrize(
    'config', ['cls_deit_s_linear_in1k.py', 'cls_ceformer_s_in1k.py'])
def test_dynamic_export_runs_other_batch_sizes(config, shrink_config,
                                               tmp_path):
    cfg = Config.fromfile(str(ROOT / 'configs' / config))
    shrink_config(cfg)
    wrapper = export_onnx.load_for_export(cfg, backbone_only=True)
    path = str(tmp_path / 'dynamic.onnx')
    export_onnx.export(wrapper, images(batch=1), path, dynamic=True)
    x = images(batch=3, seed=5)
    with torch.no_grad():
        expected = wrapper(x)
    for e, g in zip(expected, run_onnx(path, x)):
        np.testing.assert_allclose(g, e.numpy(), atol=1e-4, rtol=1e-4)
