"""Evaluate a checkpoint: COCO bbox/segm mAP for detection configs (mmdet's
CocoMetric, pycocotools), top-1/top-5 for classification configs.

A config's ``compile`` (mmengine's option: True or ``torch.compile``'s
keyword arguments, e.g. ``--cfg-options compile=True``) compiles the
model's forward, as tools/train.py does.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
        [--cfg-options key=value ...] [--launcher none|pytorch|slurm|mpi]
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
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump the predictions to a .pkl file')
    add_common_args(parser)
    return parser.parse_args(argv)


def build_config(args) -> Config:
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    if args.out:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must end with .pkl, got {args.out}')
        cfg.test_evaluator = list(cfg.test_evaluator) if isinstance(
            cfg.test_evaluator, (list, tuple)) else [cfg.test_evaluator]
        cfg.test_evaluator.append(
            dict(type='DumpResults', out_file_path=args.out))
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = build_config(args)
    prepare_cpu_distributed(cfg)
    compile_options = take_compile_option(cfg)
    runner = Runner.from_cfg(cfg)
    compile_model_forward(runner.model, compile_options)
    metrics = runner.test()
    # One line per metric, for scripts and for people.
    for name, value in metrics.items():
        print(f'{name}: {value}')
    return metrics


if __name__ == '__main__':
    main()
