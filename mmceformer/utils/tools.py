"""What tools/train.py and tools/test.py share: their common flags, the
config they hand to mmengine's Runner, and its ``compile`` option."""
import argparse
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--work-dir``, ``--cfg-options``, ``--launcher`` and the local rank
    (torchrun passes ``--local-rank``, older launchers ``--local_rank``)."""
    parser.add_argument(
        '--work-dir',
        help='where logs and checkpoints go; '
        'default ./work_dirs/CONFIG_NAME')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. train_cfg.max_epochs=2')
    parser.add_argument(
        '--launcher',
        default='none',
        choices=['none', 'pytorch', 'slurm', 'mpi'])
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_config(args) -> Config:
    """The config with the command line's overrides, launcher and work dir
    applied; also exports LOCAL_RANK as mmengine expects."""
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


def take_compile_option(cfg: Config):
    """Remove mmengine's ``compile`` option from ``cfg`` (so that the Runner
    does not compile ``train_step`` itself) and return it, normalised:
    None (off) or ``torch.compile``'s keyword arguments.

    mmengine compiles the whole ``train_step``, optimizer step included,
    and torch 2.14's dynamo fails on that step (InternalTorchDynamoError in
    ``Adam.step``'s ``param_groups``, with any model); see
    :func:`compile_model_forward`."""
    option = cfg.pop('compile', None)
    if option is None or option is False:
        return None
    if option is True:
        return {}
    if not isinstance(option, dict):
        raise ValueError(f'compile must be True, False or a dict of '
                         f'torch.compile arguments, got {option!r}')
    return dict(option)


def compile_model_forward(model, options) -> None:
    """``torch.compile`` the model's ``forward`` (for a DDP wrapper, its
    module's), which every train, val and test step runs (mode 'loss' and
    'predict' get a graph each); preprocessing, loss parsing and the
    optimizer step stay eager. ``options``: :func:`take_compile_option`'s
    result (None: nothing)."""
    if options is None:
        return
    module = getattr(model, 'module', model)
    module.forward = torch.compile(module.forward, **options)
