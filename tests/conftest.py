"""Shared test helpers."""
import copy
import math
import os
import sys

import pytest
import torch

import mmceformer  # noqa: F401
from mmceformer.testing import BACKBONE_VARIANTS, TINY_BACKBONES  # noqa: F401


def pytest_collection_modifyitems(config, items):
    """MMCEFORMER_NO_MMCV_OPS=1 (the stage on mmcv without compiled ops,
    ``make test-compat``) skips the tests marked ``mmcv_ops``; everywhere
    else they run, and fail if the ops are missing."""
    if os.environ.get('MMCEFORMER_NO_MMCV_OPS') != '1':
        return
    skip = pytest.mark.skip(reason='needs mmcv compiled ops '
                            '(MMCEFORMER_NO_MMCV_OPS=1)')
    for item in items:
        if 'mmcv_ops' in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def default_scope_mmpretrain():
    """Each test starts in mmpretrain's scope, whatever an earlier test (a
    Runner, an mmdet config) left as mmengine's global default scope."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


# Shrink the backbone, keep every other option of the config.
TINY = TINY_BACKBONES


def _tiny_model_cfg(cfg):
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


@pytest.fixture
def tiny_model_cfg():
    """``cfg -> model cfg`` with a tiny backbone and matching channels."""
    return _tiny_model_cfg


@pytest.fixture
def shrink_config():
    """Shrink a whole Config in place (its model becomes tiny)."""

    def shrink(cfg):
        cfg.model = _tiny_model_cfg(cfg)

    return shrink


@pytest.fixture(params=['linear', 'quadratic'])
def attention_order(request, monkeypatch):
    """Run a test in each evaluation order of the linear attention: the
    O(N) lifted form of eq. (3-9) and the O(Nq Nk) form of the same
    products, which the shapes pick otherwise (``prefer_quadratic``; a
    test's few tokens always pick the quadratic one). Use with
    ``pytestmark = pytest.mark.usefixtures('attention_order')``."""
    # (the package attribute of this name is the function)
    module = sys.modules['mmceformer.ops.linear_attention']
    ratio = math.inf if request.param == 'quadratic' else 0.0
    monkeypatch.setattr(module, 'QUADRATIC_COST_RATIO', ratio)
    return request.param
