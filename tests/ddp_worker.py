"""One rank of the 2-process CPU DDP checks in test_distributed.py.

    RANK=r WORLD_SIZE=2 MASTER_ADDR=... MASTER_PORT=... \\
        python tests/ddp_worker.py OUT.json

Wraps every (tiny) backbone x attention mode x output kind with exactly the
wrapper that ``tools/train.py`` makes mmengine's Runner build on a CPU
(mmengine's defaults: ``find_unused_parameters=False``), runs three training
steps, and writes what happened (rank 0) as JSON: ``'ok'`` or the error.
Also reads back the settings of the wrapped model for launcher configs.
"""
import json
import os
import sys
import types

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.runner import Runner

import mmceformer  # noqa: F401
from mmceformer.models.layers.e_attention import ATTN_MODES
from mmceformer.utils.launch import prepare_cpu_distributed

sys.path.insert(0, os.path.dirname(__file__))
from conftest import TINY  # noqa: E402
from helpers import probe_loss  # noqa: E402

# (backbone, extra options): classification and dense outputs.
VARIANTS = [
    ('EAttentionViT', dict(out_type='cls_token', prune_mode='drop')),
    ('EAttentionViT', dict(out_type='pyramid', prune_mode='skip')),
    ('CEFormer', dict(out_type='cls_token', prune_mode='drop')),
    ('CEFormer', dict(out_type='pyramid', prune_mode='skip')),
    ('EAttentionSwin', dict(out_indices=(0, 1, 2, 3))),
]


def variant_names():
    return [
        f'{name}-{mode}-{extra.get("out_type", "maps")}'
        for name, extra in VARIANTS for mode in ATTN_MODES
    ]


def wrap(cfg, model):
    """The model as ``Runner.wrap_model`` wraps it for this config."""
    runner = types.SimpleNamespace(
        distributed=True, cfg=cfg, logger=MMLogger.get_instance('ddp'))
    return Runner.wrap_model(runner, cfg.get('model_wrapper_cfg'), model)


def launched(options):
    cfg = Config(dict(launcher='pytorch', **options))
    assert prepare_cpu_distributed(cfg)
    return cfg


def main(out_path):
    from mmpretrain.registry import MODELS
    results = {}
    names = iter(variant_names())
    for name, extra in VARIANTS:
        for mode in ATTN_MODES:
            key = next(names)
            torch.manual_seed(0)
            backbone = MODELS.build(
                dict(type=name, attn_mode=mode, **TINY[name], **extra))
            model = wrap(launched({}), backbone)
            try:
                for step in range(3):
                    outs = model(torch.randn(2, 3, 64, 64))
                    probe_loss(outs).backward()
                results[key] = 'ok'
            except RuntimeError as error:  # DDP's unused-parameter error
                results[key] = str(error).splitlines()[0]
    # Launcher settings, read back from the wrapped model.
    settings = {}
    for label, options in {
            'default': {},
            'find_unused': dict(find_unused_parameters=True),
            'wrapper_cfg': dict(
                model_wrapper_cfg=dict(
                    type='MMDistributedDataParallel',
                    broadcast_buffers=True,
                    find_unused_parameters=True)),
    }.items():
        model = wrap(launched(options), torch.nn.Linear(2, 2))
        settings[label] = dict(
            type=type(model).__name__,
            find_unused_parameters=model.find_unused_parameters,
            broadcast_buffers=model.broadcast_buffers,
            device_ids=model.device_ids)
    if int(os.environ['RANK']) == 0:
        with open(out_path, 'w') as f:
            json.dump(dict(steps=results, settings=settings), f)


if __name__ == '__main__':
    main(sys.argv[1])
