"""Train a model from a config with mmengine's Runner (mmpretrain or mmdet).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--cfg-options key=value ...] [--launcher none|pytorch|slurm|mpi]

Distributed: tools/dist_train.sh CONFIG GPUS [args] (torchrun).

A config's ``compile`` (True or ``torch.compile``'s arguments, e.g.
``--cfg-options compile=True``) compiles the model's forward for every
step (mmceformer.utils.tools.compile_model_forward).
"""
import argparse

from mmengine.config import Config
from mmengine.runner import Runner

import mmceformer  # noqa: F401  (registers models; safe checkpoint loading)
from mmceformer.utils.launch import prepare_cpu_distributed
from mmceformer.utils.tools import (add_common_args, compile_model_forward,
                                    load_config, take_compile_option)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        default=None,
        help='resume from CKPT, or with no value from the latest checkpoint '
        'in the work dir')
    parser.add_argument(
        '--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate with the batch size')
    add_common_args(parser)
    return parser.parse_args(argv)


def build_config(args) -> Config:
    cfg = load_config(args)
    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper == 'AmpOptimWrapper':
            print('AMP is already on in the config')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or \
                'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError('--auto-scale-lr needs auto_scale_lr.'
                             'base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = build_config(args)
    prepare_cpu_distributed(cfg)
    # the config's compile option, applied to the model's forward
    compile_options = take_compile_option(cfg)
    runner = Runner.from_cfg(cfg)
    compile_model_forward(runner.model, compile_options)
    runner.train()
    return runner


if __name__ == '__main__':
    main()
