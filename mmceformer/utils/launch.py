"""Distributed runs without GPUs.

mmengine 0.10.7's ``pytorch`` launcher always calls
``torch.cuda.set_device`` and wraps the model in DDP with
``device_ids=[LOCAL_RANK]``, so ``tools/dist_train.sh`` fails on a machine
without CUDA. :func:`prepare_cpu_distributed` starts the process group with
gloo itself (the Runner then skips its own start) and asks for a CPU DDP.
"""
import os

import torch
import torch.distributed as dist


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
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    os.environ.setdefault('LOCAL_RANK', '0')
    return True
