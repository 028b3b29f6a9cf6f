"""Seconds per training step of a config on its own train set, against the
same config with some options changed, in one run.

    python tools/analysis/benchmark_train_step.py CONFIG
        [--checkpoint CKPT] [--variant KEY=VALUE ...] [--steps 10]
        [--warmup 3] [--profile]

Both models start from CKPT (a whole-model checkpoint: from a trained
detector the RoI heads see the proposals they see late in training, which
decide their cost) and train on the same batches of the config's
``train_dataloader``, step by step in turn; the median seconds per step of
each and their ratio are printed. ``--variant`` takes options as
``--cfg-options`` does. ``--profile`` then prints torch.profiler's table
(by self CPU time) of a few more steps of each model.
"""
import argparse
import copy
import itertools

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger

import mmceformer  # noqa: F401
from mmceformer.utils.complexity import build_model, interleaved_latency


def prepare(cfg: Config, checkpoint=None, steps: int = 1):
    """A step function of ``cfg``'s model in train mode, with its optimizer,
    cycling over ``steps`` batches of its train set (loaded up front, so
    that data loading is not timed); the model is its ``model``."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.runner import Runner
    model, _ = build_model(cfg)
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu')
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    loader_cfg = cfg.train_dataloader.copy()
    loader_cfg.update(num_workers=0, persistent_workers=False)
    loader = Runner.build_dataloader(loader_cfg, seed=0)
    batches = list(itertools.islice(itertools.cycle(loader), steps))
    cycle = itertools.cycle(batches)

    def step():
        return model.train_step(next(cycle), optim_wrapper)

    step.model = model
    return step


def benchmark_train_step(cfg: Config,
                         variant=None,
                         checkpoint=None,
                         warmup: int = 3,
                         steps: int = 10):
    """Median seconds per training step of ``cfg`` and, when ``variant``
    (options as ``--cfg-options``) is given, of ``cfg`` with them merged.

    Returns a dict ``config`` (and ``variant``) -> seconds per step, and
    the step functions (see :func:`prepare`), in that order.
    """
    cfgs = {'config': cfg}
    if variant:
        changed = copy.deepcopy(cfg)
        changed.merge_from_dict(variant)
        cfgs['variant'] = changed
    fns = [prepare(c, checkpoint, warmup + steps) for c in cfgs.values()]
    seconds = interleaved_latency(fns, warmup, steps, grad=True)
    return dict(zip(cfgs, seconds)), fns


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--checkpoint', help='whole-model checkpoint')
    parser.add_argument(
        '--variant',
        nargs='+',
        action=DictAction,
        help='options that the compared model changes (as --cfg-options)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument(
        '--profile',
        action='store_true',
        help='print torch.profiler tables of 3 more steps of each model')
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        raise ValueError('--steps must be >= 1 and --warmup >= 0, got '
                         f'{args.steps} and {args.warmup}')
    cfg = Config.fromfile(args.config)
    # the optimizer's per-parameter options would print hundreds of lines
    MMLogger.get_current_instance().setLevel('WARNING')
    results, fns = benchmark_train_step(cfg, args.variant, args.checkpoint,
                                        args.warmup, args.steps)
    batch = cfg.train_dataloader.batch_size
    print(f'# training steps of {args.config} ({batch} images each), '
          f'median of {args.steps} after {args.warmup} warm-up, '
          f'threads={torch.get_num_threads()}')
    print(f"config: {results['config']:.3f} s/step")
    if args.variant:
        options = ' '.join(f'{k}={v}' for k, v in args.variant.items())
        print(f"variant ({options}): {results['variant']:.3f} s/step")
        print(f"variant / config: {results['variant'] / results['config']:.2f}"
              ' of the time')
    if args.profile:
        for name, fn in zip(results, fns):
            with torch.profiler.profile() as prof:
                for _ in range(3):
                    fn()
            print(f'\n# {name}, 3 steps')
            print(prof.key_averages().table(
                sort_by='self_cpu_time_total', row_limit=15))
    return results


if __name__ == '__main__':
    main()
