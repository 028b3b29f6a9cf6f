"""Every config under configs/ loads, builds its model and runs one train
step (every trainable parameter gets a gradient, as DDP needs) and one
predict on tiny inputs. The test finds the configs itself;
only the backbone's size is shrunk (and the head's/neck's channels follow)."""
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
# Detection configs (COCO and toy) build detectors that need mmcv's
# compiled ops.
CONFIG_PARAMS = [
    pytest.param(c, marks=pytest.mark.mmcv_ops) if any(
        k in c for k in ('coco', 'mask_rcnn', 'deformable_detr')) else c
    for c in CONFIGS
]


def scope_of(cfg):
    return cfg.get('default_scope', 'mmpretrain')


@pytest.mark.parametrize('config', CONFIG_PARAMS)
def test_config_builds_trains_and_predicts(config, tiny_model_cfg):
    cfg = Config.fromfile(str(ROOT / config))
    scope = scope_of(cfg)
    init_default_scope(scope)
    model_cfg = tiny_model_cfg(cfg)
    torch.manual_seed(0)
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.testing import demo_mm_inputs
        model = MODELS.build(model_cfg)
        heads = [
            model_cfg.get('bbox_head'),
            model_cfg.get('roi_head', {}).get('bbox_head')
        ]
        num_classes = next(h.num_classes for h in heads if h)
        packed = demo_mm_inputs(
            2, [(3, 128, 160), (3, 120, 128)],
            num_items=[3, 2],
            num_classes=num_classes,
            with_mask=True)
    else:
        from mmpretrain.registry import MODELS
        from mmpretrain.structures import DataSample
        model = MODELS.build(model_cfg)
        num_classes = model_cfg.head.num_classes
        packed = dict(
            inputs=[
                torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
                for _ in range(2)
            ],
            data_samples=[
                DataSample().set_gt_label(i % num_classes) for i in (3, 7)
            ])
    model.init_weights()  # as the Runner does (e.g. DETR's focal prior)
    model.train()
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    # mmengine wraps the model in DDP with find_unused_parameters=False,
    # which needs a gradient for every trainable parameter at every step.
    unused = [
        name for name, p in model.named_parameters()
        if p.requires_grad and p.grad is None
    ]
    assert not unused, f'trainable parameters left out of the loss: {unused}'
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(packed, False)
        results = model(**data, mode='predict')
    assert len(results) == 2


def test_every_config_is_listed_in_the_config_table():
    table = (ROOT / 'docs' / 'configs.md').read_text()
    missing = [c for c in CONFIGS if c not in table]
    assert not missing, f'docs/configs.md misses {missing}'


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


def test_configs_inherit_the_shipped_ones_by_package_name(tmp_path):
    """``mmceformer::NAME`` resolves to the config shipped in the package
    (mmceformer/.mim/configs, linked there by the editable install) and
    builds the same config as the absolute path, scopes included."""
    from mmceformer.utils import shipped_config
    for name, base in [('by_name.py', "'mmceformer::mask_rcnn_ceformer_s_"
                        "coco.py'"),
                       ('by_path.py',
                        repr(str(ROOT / 'configs' /
                                 'mask_rcnn_ceformer_s_coco.py')))]:
        (tmp_path / name).write_text(
            f'_base_ = [{base}]\n'
            'model = dict(backbone=dict(keep_ratio=0.5))\n')
    by_name = Config.fromfile(str(tmp_path / 'by_name.py'))
    by_path = Config.fromfile(str(tmp_path / 'by_path.py'))
    assert by_name.model.backbone.keep_ratio == 0.5
    assert by_name.to_dict() == by_path.to_dict()
    assert Path(shipped_config('toy/mask_rcnn_ceformer_toy.py')).samefile(
        ROOT / 'configs' / 'toy' / 'mask_rcnn_ceformer_toy.py')
    (tmp_path / 'bad.py').write_text("_base_ = ['mmceformer::nope.py']\n")
    with pytest.raises(FileNotFoundError, match='nope.py'):
        Config.fromfile(str(tmp_path / 'bad.py'))


@pytest.mark.mmcv_ops  # builds Deformable DETR
def test_deformable_detr_new_pyramid_trains_at_full_lr(tiny_model_cfg):
    """mmdet's backbone lr x 0.1 is for pre-trained weights: the plain
    ViT's pyramid is new and takes the full lr (it took 0.1x before)."""
    from mmdet.registry import MODELS
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(
        str(ROOT / 'configs' / 'deformable_detr_deit_s_eattn_coco.py'))
    init_default_scope('mmdet')
    model = MODELS.build(tiny_model_cfg(cfg))
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    lr = {
        id(p): group['lr']
        for group in wrapper.optimizer.param_groups for p in group['params']
    }
    base = cfg.optim_wrapper.optimizer.lr
    for name, param in model.named_parameters():
        if name.startswith('backbone.pyramid'):
            assert lr[id(param)] == pytest.approx(base), name
        elif name.startswith('backbone.'):
            assert lr[id(param)] == pytest.approx(0.1 * base), name
