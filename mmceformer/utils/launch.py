"""Distributed runs without GPUs.

mmengine 0.10.7's ``pytorch`` launcher always calls
``torch.cuda.set_device`` and wraps the model in DDP with
``device_ids=[LOCAL_RANK]``, so ``tools/dist_train.sh`` fails on a machine
without CUDA. :func:`prepare_cpu_distributed` starts the process group with
gloo itself (the Runner then skips its own start) and asks for a CPU DDP
with exactly the wrapper settings that mmengine's GPU path would use.
"""
import copy
import os

import torch
import torch.distributed as dist


def cpu_model_wrapper_cfg(cfg) -> dict:
    """The ``model_wrapper_cfg`` that ``Runner.wrap_model`` would build on
    GPUs, for a CPU process: the config's own ``model_wrapper_cfg`` if it has
    one, else mmengine's default (``MMDistributedDataParallel`` with
    ``broadcast_buffers=False`` and the config's ``find_unused_parameters``,
    default False); in both cases ``device_ids=None`` (a CPU module)."""
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        wrapper = dict(
            type='MMDistributedDataParallel',
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    else:
        wrapper = copy.deepcopy(dict(wrapper))
    wrapper['device_ids'] = None
    return wrapper


def prepare_cpu_distributed(cfg) -> bool:
    """For a distributed launch on a machine without CUDA: init gloo and
    make the Runner wrap the model for the CPU. Returns whether it did."""
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return False
    if cfg.get('launcher') != 'pytorch':
        raise ValueError(f"launcher='{cfg.launcher}' needs GPUs; on a CPU "
                         "machine use the pytorch launcher (dist_train.sh)")
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    env_cfg = cfg.setdefault('env_cfg', {})
    env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    cfg.model_wrapper_cfg = cpu_model_wrapper_cfg(cfg)
    os.environ.setdefault('LOCAL_RANK', '0')
    return True
