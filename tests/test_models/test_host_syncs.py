"""No host syncs that the math does not need on the eval path: none in
the softmax and linear modes, at most one per pruning block (the compaction
of the kept tokens) in the pruning modes. Each read of a tensor value into
Python (``bool``, ``int``, ``item``, ...) stalls a GPU stream."""
import collections

import pytest
import torch
from conftest import BACKBONE_VARIANTS, TINY
from helpers import images, in_mode
from mmpretrain.registry import MODELS

READS = ('__bool__', '__int__', '__float__', '__index__', 'item', 'tolist')


@pytest.fixture
def count_reads(monkeypatch):
    counts = collections.Counter()
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    return counts


@pytest.mark.parametrize('name,mode,extra', BACKBONE_VARIANTS)
def test_eval_forward_host_syncs(name, mode, extra, count_reads):
    model = in_mode(
        MODELS.build(dict(type=name, attn_mode=mode, **TINY[name], **extra)),
        training=False)
    x = images()
    count_reads.clear()
    with torch.no_grad():
        model(x)
    pruning = len(model.prune_layers) if mode in ('prune', 'eattn') else 0
    assert sum(count_reads.values()) <= pruning, dict(count_reads)
    if mode in ('softmax', 'linear'):
        assert not count_reads
