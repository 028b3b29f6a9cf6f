"""Every config under configs/ loads, builds its model and runs one train
step and one predict on tiny inputs. The test finds the configs itself;
only the backbone's size is shrunk (and the head's/neck's channels follow)."""
import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmceformer  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / 'configs').rglob('*.py')
    if '_base_' not in p.parts)

# Shrink the backbone, keep every other option of the config.
TINY = {
    'EViT':
    dict(
        arch=dict(
            embed_dims=48, num_layers=4, num_heads=3, feedforward_channels=96),
        img_size=64),
    'CEFormer':
    dict(
        arch=dict(embed_dims=48, depth=4, num_heads=2, stem_channels=16),
        img_size=64),
    'ESwinTransformer':
    dict(
        arch=dict(embed_dims=16, depths=[1, 1, 2, 1], num_heads=[1, 1, 2, 2]),
        img_size=64,
        window_size=4,
        pad_small_map=True),
}


def tiny_model_cfg(cfg):
    model = copy.deepcopy(cfg.model)
    backbone = model.backbone
    assert backbone.type in TINY, f'add {backbone.type} to TINY'
    backbone.update(TINY[backbone.type])
    backbone.pop('init_cfg', None)  # no checkpoint to load in a test
    if cfg.get('data_preprocessor') is not None:  # as the Runner does
        model.setdefault('data_preprocessor', cfg.data_preprocessor)
    # Channels that the head or neck must take from the tiny backbone.
    from mmpretrain.registry import MODELS
    probe = MODELS.build(backbone)
    probe.eval()
    with torch.no_grad():
        outs = probe(torch.zeros(1, 3, 64, 64))
    channels = [o.shape[1] for o in outs]
    if model.get('neck') and 'in_channels' in model.neck:
        model.neck.in_channels = channels
    elif 'head' in model:
        model.head.in_channels = channels[-1]
    return model


def scope_of(cfg):
    return cfg.get('default_scope', 'mmpretrain')


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_trains_and_predicts(config):
    cfg = Config.fromfile(str(ROOT / config))
    scope = scope_of(cfg)
    init_default_scope(scope)
    model_cfg = tiny_model_cfg(cfg)
    torch.manual_seed(0)
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.testing import demo_mm_inputs
        model = MODELS.build(model_cfg)
        num_classes = 80
        packed = demo_mm_inputs(
            2, [(3, 128, 160), (3, 120, 128)],
            num_items=[3, 2],
            num_classes=num_classes,
            with_mask=True)
    else:
        from mmpretrain.registry import MODELS
        from mmpretrain.structures import DataSample
        model = MODELS.build(model_cfg)
        packed = dict(
            inputs=[
                torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
                for _ in range(2)
            ],
            data_samples=[DataSample().set_gt_label(i) for i in (3, 7)])
    model.train()
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(packed, False)
        results = model(**data, mode='predict')
    assert len(results) == 2


def test_every_config_is_listed_in_the_readme():
    readme = (ROOT / 'README.md').read_text()
    missing = [c for c in CONFIGS if c not in readme]
    assert not missing, f'README config table misses {missing}'


def test_configs_inherit_from_outside_the_repo(tmp_path):
    """Another project inherits our config with _base_ (absolute path)."""
    child = tmp_path / 'my_project' / 'my_config.py'
    child.parent.mkdir()
    base = ROOT / 'configs' / 'mask_rcnn_ceformer_s_coco.py'
    child.write_text(f"_base_ = ['{base}']\n"
                     "model = dict(backbone=dict(keep_ratio=0.5))\n")
    cfg = Config.fromfile(str(child))
    assert cfg.model.backbone.type == 'CEFormer'
    assert cfg.model.backbone.keep_ratio == 0.5
    assert cfg.custom_imports['imports'] == ['mmceformer']
