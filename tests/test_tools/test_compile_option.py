"""mmengine's ``compile`` config option with every registered backbone: a
training epoch through tools/train.py and an evaluation through
tools/test.py, both of which compile the model's forward
(``compile_model_forward``; mmengine's own compilation of the whole
``train_step`` fails in the optimizer step on torch 2.14).

``backend='aot_eager'``: dynamo's graph capture and AOTAutograd's forward
and backward graphs (functionalised in-place token moves included), without
the C++ code generation of inductor, which would take minutes per backbone
on 2 cores; the compiled speed is measured by
``tools/analysis/speed_targets.py --compile`` (inductor)."""
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, _tiny_model_cfg
from mmengine.config import Config
from torch.torch_version import TorchVersion

from mmceformer.datasets import make_toy_cls

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tools'))
TOY = str(ROOT / 'configs' / 'toy' / 'cls_ceformer_toy.py')
# how a classifier reads each backbone: (backbone options, neck)
CLASSIFIER = {
    'CEFormer': (dict(out_type='cls_token'), None),
    'EAttentionViT': (dict(out_type='cls_token'), None),
    'EAttentionSwin': ({}, dict(type='GlobalAveragePooling')),
}


def test_every_registered_backbone_has_a_classifier_here():
    assert set(CLASSIFIER) == set(TINY)


@pytest.fixture(scope='module')
def toy_cls_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('toy_cls')
    make_toy_cls(str(root), 4, 2, label='shape', max_objects=1)
    return str(root) + '/'


def compiled_config(name, root):
    """The toy classifier with ``name``'s tiny backbone (E-Attention), one
    epoch of 4 images."""
    cfg = Config.fromfile(TOY)
    options, neck = CLASSIFIER[name]
    cfg.model.backbone = dict(type=name, attn_mode='eattn', **options)
    cfg.model.neck = neck
    cfg.model = _tiny_model_cfg(cfg)  # TINY[name], head channels to match
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
        cfg[loader].num_workers = 0
        cfg[loader].batch_size = 2
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
    cfg.param_scheduler = []
    cfg.compile = dict(backend='aot_eager')
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    return cfg


def is_compiled(fn):
    return hasattr(fn, '_torchdynamo_orig_callable')


@pytest.mark.parametrize('name', sorted(TINY))
def test_compile_option_trains_and_tests(name, toy_cls_root, tmp_path,
                                         monkeypatch):
    import test as test_tool
    import torch._dynamo as dynamo

    import train as train_tool
    if name == 'EAttentionSwin' and TorchVersion(torch.__version__) < (2, 2):
        pytest.skip('torch 2.1 dynamo fails inside ESwin (InternalTorch'
                    'DynamoError: super(type, obj) in its tracer), as in '
                    'tests/test_models/test_compile.py')
    cfg = compiled_config(name, toy_cls_root)
    config = tmp_path / 'compiled.py'
    cfg.dump(str(config))
    dynamo.reset()
    work_dir = tmp_path / 'work'  # (the Runner writes its config there)
    runner = train_tool.main([str(config), '--work-dir', str(work_dir)])
    # the forward is compiled, not mmengine's train_step; 2 iterations ran
    assert is_compiled(runner.model.forward)
    assert not is_compiled(runner.model.train_step)
    assert runner.iter == 2
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert torch.isfinite(torch.tensor(loss))

    compiled = []

    def recording(model, options):
        compile_model_forward(model, options)
        compiled.append(is_compiled(model.forward))

    from mmceformer.utils.tools import compile_model_forward
    monkeypatch.setattr(test_tool, 'compile_model_forward', recording)
    checkpoint = str(work_dir / 'epoch_1.pth')
    metrics = test_tool.main(
        [str(config), checkpoint, '--work-dir',
         str(tmp_path / 'test')])
    eager = test_tool.main([
        str(config), checkpoint, '--work-dir',
        str(tmp_path / 'eager'), '--cfg-options', 'compile=False'
    ])
    dynamo.reset()
    assert compiled == [True, False]
    assert metrics == eager  # the compiled evaluation's top-1 is eager's


@pytest.mark.parametrize('option,expected', [(None, None), (False, None),
                                             (True, {}),
                                             (dict(backend='eager'),
                                              dict(backend='eager'))])
def test_compile_option_is_taken_from_the_config(option, expected):
    from mmceformer.utils.tools import take_compile_option
    cfg = Config(dict(model=dict(), compile=option))
    assert take_compile_option(cfg) == expected
    assert 'compile' not in cfg  # mmengine's Runner does not compile too
    with pytest.raises(ValueError, match='compile must be'):
        take_compile_option(Config(dict(compile='yes')))
