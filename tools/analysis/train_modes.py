"""Fine-tune one detection config in several attention modes and seeds
from the same checkpoint, then compare the modes by mAP and by FPS with
the trained weights: the thesis's table 3-6 in miniature.

    python tools/analysis/train_modes.py CONFIG --checkpoint CKPT \
        [--modes softmax linear prune eattn] [--seeds 0 1] [--jobs 2] \
        [--work-dir work_dirs/train_modes/NAME] \
        [--metrics coco/bbox_mAP coco/bbox_mAP_50] \
        [--fps-repeats 20] [--cfg-options KEY=VALUE ...]

Each (mode, seed) runs ``tools/train.py CONFIG`` with
``model.backbone.attn_mode=MODE``, ``randomness.seed=SEED`` and the
backbone's ``init_cfg`` pointing at ``--checkpoint`` (the modes share the
parameters: sampling is parameter-free, so every mode starts from the same
softmax weights, as the thesis's table does), in WORK_DIR/MODE_seedSEED.
``--jobs N`` runs N trainings at a time with ``threads / N`` threads each
(mAP does not depend on it; never time anything beside it). A run whose
last checkpoint exists is not trained again, so an interrupted sweep
continues where it stopped.

The validation metrics at every ``val_interval`` are read from each run's
``vis_data/scalars.json`` (the curve; an epoch-based loop, whose
validation records carry the epoch as ``step``). The FPS of the modes is
then timed in one process with nothing else running (benchmark_detector.py's
``benchmark``: the config's test pipeline, batch 1, interleaved, median),
on the first validation image, with each mode's checkpoint of the first
seed and again with random weights (the kept-token count of token sampling
depends on the weights). Writes WORK_DIR/summary.json and prints a Markdown
table per metric: per mode the metric per seed, the mean, its difference
to the first mode (and in the first table the FPS and its ratio to the
first mode, trained and random weights), the curves, and where the trained
detectors' time goes.
"""
import argparse
import glob
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))

MODES = ('softmax', 'linear', 'prune', 'eattn')


def run_name(mode: str, seed: int) -> str:
    return f'{mode}_seed{seed}'


def train_command(config: str, checkpoint: Optional[str], mode: str,
                  seed: int, work_dir: str,
                  cfg_options: Sequence[str] = ()) -> List[str]:
    """``tools/train.py`` for one (mode, seed); ``--resume`` so that a run
    stopped halfway continues."""
    options = [f'model.backbone.attn_mode={mode}', f'randomness.seed={seed}']
    if checkpoint:
        options.append(f'model.backbone.init_cfg.checkpoint={checkpoint}')
    return [
        sys.executable,
        osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir,
        '--resume', '--cfg-options', *options, *cfg_options
    ]


def last_checkpoint(work_dir: str, max_epochs: int) -> Optional[str]:
    path = osp.join(work_dir, f'epoch_{max_epochs}.pth')
    return path if osp.exists(path) else None


def read_curve(work_dir: str, metric: str) -> List[Dict]:
    """``[{'epoch': e, metric: v}, ...]`` from the run's scalars.json files
    (one per start of the run: a resumed run has several), by epoch."""
    by_epoch = {}
    pattern = osp.join(work_dir, '*', 'vis_data', 'scalars.json')
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if metric in record:
                    by_epoch[record['step']] = record[metric]
    return [{'epoch': e, metric: by_epoch[e]} for e in sorted(by_epoch)]


def run_trainings(commands: Sequence[List[str]], jobs: int,
                  threads: int) -> None:
    """Run the commands, ``jobs`` at a time, ``threads // jobs`` threads
    each, each logging to its work dir + ``.log``; a slot is refilled as
    soon as any run ends. If one fails, the others are stopped and the
    failure raised."""
    if jobs < 1:
        raise ValueError(f'jobs must be >= 1, got {jobs}')
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, threads // jobs)))
    pending = list(commands)
    running = []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                command = pending.pop(0)
                log = open(command[command.index('--work-dir') + 1] + '.log',
                           'a')
                process = subprocess.Popen(
                    command, env=env, stdout=log, stderr=subprocess.STDOUT)
                running.append((command, process, log))
            time.sleep(0.05)
            for entry in [e for e in running if e[1].poll() is not None]:
                running.remove(entry)
                command, process, log = entry
                log.close()
                if process.returncode:
                    raise RuntimeError(
                        f'training failed ({process.returncode}): '
                        f'{" ".join(command)}; see {log.name}')
    finally:
        for _, process, log in running:
            process.terminate()
            process.wait()
            log.close()


def summarize(modes: Sequence[str], seeds: Sequence[int],
              curves: Dict[str, List[Dict]], metric: str) -> List[Dict]:
    """Per mode: the final metric of each seed (None where the run has
    none), their mean and the mean's difference to the first mode."""
    rows = []
    for mode in modes:
        finals = []
        for seed in seeds:
            curve = curves[run_name(mode, seed)]
            finals.append(curve[-1][metric] if curve else None)
        values = [v for v in finals if v is not None]
        rows.append(
            dict(
                mode=mode,
                finals=finals,
                mean=statistics.mean(values) if values else None))
    base = rows[0]['mean']
    for row in rows:
        row['delta'] = (None if row['mean'] is None or base is None else
                        row['mean'] - base)
    return rows


def table(rows: Sequence[Dict], seeds: Sequence[int], metric: str,
          fps: Optional[Dict] = None) -> str:
    def cell(v, fmt='{:.3f}'):
        return '-' if v is None else fmt.format(v)

    head = ['mode'] + [f'{metric} seed {s}' for s in seeds] + ['mean', 'delta']
    if fps:
        head += ['FPS trained', 'ratio trained', 'FPS random', 'ratio random']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for i, row in enumerate(rows):
        cells = [row['mode']] + [cell(v) for v in row['finals']]
        cells += [cell(row['mean']), cell(row['delta'], '{:+.3f}')]
        if fps:
            for kind in ('trained', 'random'):
                result = fps[kind][i]
                cells += [f"{result['fps']:.2f}", f"{result['ratio']:.2f}x"]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def load_config(path: str, cfg_options: Sequence[str] = ()):
    """The config with ``--cfg-options``-style ``KEY=VALUE`` strings merged,
    parsed as tools/train.py parses them."""
    from mmengine.config import Config, DictAction
    cfg = Config.fromfile(path)
    if cfg_options:
        parser = argparse.ArgumentParser()
        parser.add_argument('--cfg-options', nargs='+', action=DictAction)
        cfg.merge_from_dict(
            parser.parse_args(['--cfg-options', *cfg_options]).cfg_options)
    return cfg


def time_modes(config: str, modes: Sequence[str],
               checkpoints: Sequence[Optional[str]], repeats: int,
               cfg_options: Sequence[str] = ()) -> List[Dict]:
    """benchmark_detector's ``benchmark`` over the modes, on the config's
    first validation image."""
    import mmcv
    from benchmark_detector import benchmark
    configs = []
    for mode in modes:
        cfg = load_config(config, cfg_options)
        cfg.model.backbone.attn_mode = mode
        cfg.model.backbone.pop('init_cfg', None)
        configs.append(cfg)
    data = configs[0].val_dataloader.dataset
    with open(osp.join(data.data_root, data.ann_file)) as f:
        first = json.load(f)['images'][0]['file_name']
    image = mmcv.imread(osp.join(data.data_root, data.data_prefix['img'],
                                 first))
    results = benchmark(configs, image, checkpoints, repeats=repeats)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument(
        '--checkpoint',
        help='stage-1 checkpoint every mode starts from (default: the '
        "config's backbone init_cfg)")
    parser.add_argument('--modes', nargs='+', default=list(MODES))
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1])
    parser.add_argument('--jobs', type=int, default=1)
    parser.add_argument('--threads', type=int, default=os.cpu_count())
    parser.add_argument('--work-dir')
    parser.add_argument(
        '--metrics',
        nargs='+',
        default=['coco/bbox_mAP', 'coco/bbox_mAP_50'],
        help='validation metrics to read (the first one gets the FPS)')
    parser.add_argument(
        '--fps-repeats',
        type=int,
        default=20,
        help='timed images per mode (0: no timing)')
    parser.add_argument('--cfg-options', nargs='+', default=[])
    args = parser.parse_args(argv)
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        raise ValueError(f'--modes must be among {MODES}, got {bad}')
    owned = [
        o for o in args.cfg_options
        if o.split('=')[0] in ('model.backbone.attn_mode', 'randomness.seed')
    ]
    if owned:
        raise ValueError(f'--cfg-options must not set {owned}: use --modes '
                         f'and --seeds')
    cfg = load_config(args.config, args.cfg_options)
    if 'max_epochs' not in cfg.train_cfg:
        raise ValueError('train_modes reads epoch-based runs (train_cfg '
                         'with max_epochs; the curves are by epoch)')
    max_epochs = cfg.train_cfg.max_epochs
    name = osp.splitext(osp.basename(args.config))[0]
    work_dir = args.work_dir or osp.join('work_dirs', 'train_modes', name)
    os.makedirs(work_dir, exist_ok=True)
    commands = []
    for mode in args.modes:
        for seed in args.seeds:
            run_dir = osp.join(work_dir, run_name(mode, seed))
            if last_checkpoint(run_dir, max_epochs) is None:
                commands.append(
                    train_command(args.config, args.checkpoint, mode, seed,
                                  run_dir, args.cfg_options))
    run_trainings(commands, args.jobs, args.threads)
    curves = {
        metric: {
            run_name(m, s): read_curve(
                osp.join(work_dir, run_name(m, s)), metric)
            for m in args.modes for s in args.seeds
        }
        for metric in args.metrics
    }
    rows = {
        metric: summarize(args.modes, args.seeds, curves[metric], metric)
        for metric in args.metrics
    }
    fps = None
    if args.fps_repeats:
        trained = [
            last_checkpoint(
                osp.join(work_dir, run_name(m, args.seeds[0])), max_epochs)
            for m in args.modes
        ]
        missing = [m for m, c in zip(args.modes, trained) if c is None]
        if missing:
            raise RuntimeError(f'no epoch_{max_epochs}.pth of seed '
                               f'{args.seeds[0]} for modes {missing}')
        fps = dict(
            trained=time_modes(args.config, args.modes, trained,
                               args.fps_repeats, args.cfg_options),
            random=time_modes(args.config, args.modes, [None] *
                              len(args.modes), args.fps_repeats,
                              args.cfg_options))
    summary = dict(
        config=args.config,
        checkpoint=args.checkpoint,
        metrics=args.metrics,
        seeds=args.seeds,
        curves=curves,
        rows=rows,
        fps=fps)
    with open(osp.join(work_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    for i, metric in enumerate(args.metrics):
        print(table(rows[metric], args.seeds, metric, fps if i == 0 else None))
        print(f'curves (epoch: {metric}):')
        for run, curve in curves[metric].items():
            print(f'  {run}: ' + ', '.join(f"{c['epoch']}: {c[metric]:.3f}"
                                           for c in curve))
    if fps:
        print('time per part, s (median; trained weights):')
        from benchmark_detector import table as part_table
        print(part_table(args.modes, fps['trained']))
    return summary


if __name__ == '__main__':
    main()
