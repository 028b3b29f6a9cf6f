"""Foundation: import, registration in both toolboxes, mmcv ops, safe
checkpoint loading."""
import pickle

import pytest
import torch

import mmceformer

REGISTERED = [
    'CEFormer', 'EAttentionViT', 'EAttentionSwin', 'EAttention',
    'SimplePyramid', 'EViT', 'ESwinTransformer'
]


def test_version():
    assert isinstance(mmceformer.__version__, str)
    assert mmceformer.__version__.count('.') == 2


@pytest.mark.mmcv_ops  # mmdet's registry imports mmdet.models on lookup
@pytest.mark.parametrize('name', REGISTERED)
def test_registered_in_both_toolboxes(name):
    from mmdet.registry import MODELS as DET_MODELS
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    assert PRETRAIN_MODELS.get(name) is DET_MODELS.get(name) is not None


@pytest.mark.parametrize('old, new', [('EViT', 'EAttentionViT'),
                                      ('ESwinTransformer', 'EAttentionSwin')])
def test_deprecated_names_build_the_new_class_with_a_warning(old, new):
    from mmpretrain.registry import MODELS

    from mmceformer.testing import TINY_BACKBONES
    cfg = dict(type=old, **TINY_BACKBONES[new])
    with pytest.warns(FutureWarning, match=f"type='{new}'"):
        model = MODELS.build(cfg)
    assert isinstance(model, MODELS.get(new))
    new_model = MODELS.build(dict(cfg, type=new))
    assert model.state_dict().keys() == new_model.state_dict().keys()


CONFIG = """
default_scope = '{scope}'
custom_imports = dict(imports=['mmceformer'], allow_failed_imports=False)
model = dict(type='EAttention', embed_dims=16, num_heads=2,
             attn_mode='eattn', prune_tokens=True, keep_ratio=0.5)
"""


@pytest.mark.parametrize(
    'scope', ['mmpretrain',
              pytest.param('mmdet', marks=pytest.mark.mmcv_ops)])
def test_builds_from_a_config_of_each_toolbox(scope, tmp_path):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, init_default_scope
    path = tmp_path / f'{scope}_cfg.py'
    path.write_text(CONFIG.format(scope=scope))
    cfg = Config.fromfile(str(path))
    init_default_scope(cfg.default_scope)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    module = registry.build(cfg.model)
    assert DefaultScope.get_current_instance().scope_name == scope
    out = module(torch.randn(2, 17, 16))
    assert out.x.shape[0] == 2 and out.index.shape[1] <= 1 + 8


@pytest.mark.mmcv_ops
def test_mmcv_compiled_ops():
    from mmcv.ops import MultiScaleDeformableAttention, RoIAlign, nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.],
                          [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    feats = torch.arange(16.).reshape(1, 1, 4, 4)
    rois = torch.tensor([[0., 0., 0., 3., 3.]])
    pooled = RoIAlign((2, 2), spatial_scale=1., sampling_ratio=2)(feats, rois)
    assert pooled.shape == (1, 1, 2, 2)
    attn = MultiScaleDeformableAttention(
        embed_dims=32, num_heads=4, num_levels=1, num_points=2)
    query = torch.randn(5, 1, 32)
    value = torch.randn(16, 1, 32)
    out = attn(
        query,
        value=value,
        reference_points=torch.rand(1, 5, 1, 2),
        spatial_shapes=torch.tensor([[4, 4]]),
        level_start_index=torch.tensor([0]))
    assert out.shape == (5, 1, 32)


def _runner(work_dir, max_epochs, resume=False):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Tiny(BaseModel):

        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 1)

        def forward(self, x, y=None, mode='tensor'):
            out = self.fc(x).squeeze(-1)
            if mode == 'loss':
                return dict(loss=((out - y)**2).mean())
            return out

    data = [dict(x=torch.randn(2), y=torch.tensor(1.)) for _ in range(8)]
    return Runner(
        model=Tiny(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=data,
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=4,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=[dict(type='MultiStepLR', milestones=[1])],
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        resume=resume,
        randomness=dict(seed=0))


def test_runner_checkpoint_round_trips_with_safe_loading(tmp_path):
    runner = _runner(tmp_path, max_epochs=1)
    runner.train()
    path = tmp_path / 'epoch_1.pth'
    checkpoint = torch.load(path)  # weights_only=True is torch's default
    assert checkpoint['meta']['epoch'] == 1
    weight = runner.model.fc.weight.detach().clone()
    # Resume in a new Runner: continues at epoch 1 and reaches epoch 2.
    resumed = _runner(tmp_path, max_epochs=2, resume=True)
    resumed.train()
    assert resumed.iter == 4 and resumed.epoch == 2
    # load_from / test path: mmengine's own loader.
    from mmengine.runner import load_checkpoint
    model = torch.nn.Module()
    model.fc = torch.nn.Linear(2, 1)
    load_checkpoint(model, str(path), map_location='cpu')
    torch.testing.assert_close(model.fc.weight, weight)


class _Payload:
    """An object that would run code when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_checkpoint_with_arbitrary_object_is_refused(tmp_path):
    """Through every mmengine entry point, on every torch: torch's own
    weights-only loader (>= 2.6) or our restricted unpickler (< 2.6)."""
    marker = tmp_path / 'code_ran'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': _Payload(str(marker))}, path)
    from mmengine.runner import load_checkpoint
    from mmengine.runner.checkpoint import _load_checkpoint
    for load in (lambda: load_checkpoint(torch.nn.Linear(2, 1), str(path)),
                 lambda: _load_checkpoint(str(path), map_location='cpu')):
        with pytest.raises(pickle.UnpicklingError, match='(?i)weights.only'):
            load()
    assert not marker.exists()
    # Resuming a Runner from it is refused too.
    runner = _runner(tmp_path / 'resume', max_epochs=1)
    with pytest.raises(pickle.UnpicklingError, match='(?i)weights.only'):
        runner.resume(str(path))
    assert not marker.exists()


def test_restricted_unpickler_loads_runner_checkpoints_refuses_code(
        tmp_path):
    """The torch < 2.6 path, exercised on whatever torch runs the tests:
    a Runner checkpoint (tensors, numpy log buffers, scheduler Counter,
    optimizer state) loads in full; a payload does not run."""
    from mmceformer.utils.checkpoint import restricted_torch_load
    runner = _runner(tmp_path, max_epochs=1)
    runner.train()
    path = tmp_path / 'epoch_1.pth'
    with restricted_torch_load():
        restricted = torch.load(path)
    plain = torch.load(path, weights_only=False)
    assert restricted.keys() == plain.keys()
    assert restricted['meta']['epoch'] == 1
    torch.testing.assert_close(restricted['state_dict'], plain['state_dict'])
    marker = tmp_path / 'code_ran'
    evil = tmp_path / 'evil.pth'
    torch.save({'meta': _Payload(str(marker))}, evil)
    with restricted_torch_load():
        with pytest.raises(pickle.UnpicklingError, match='open'):
            torch.load(evil)
        # A caller's explicit choice is kept, as on torch >= 2.6.
        assert torch.load(path, weights_only=False)['meta']['epoch'] == 1
    assert not marker.exists()
