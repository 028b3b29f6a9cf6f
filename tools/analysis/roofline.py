"""A config's model, op by op, against this machine's roofline.

    python tools/analysis/roofline.py CONFIG [--shape 800 1344] [--deploy] \
        [--detector [--image-size 1333 800]] [--repeats 5] [--top 15] \
        [--paths eager compiled onnxruntime] \
        [--cfg-options model.backbone.prune_mode=drop]

Measures the machine first (memory bandwidth from a 64 MB copy, fp32 GEMM
rate from a 1024-cubed ``torch.mm``, each the best of 10 at torch's thread
count; the cost of a page fault from the same copy into a new tensor),
then runs the config's backbone on a random (1, 3, H, W) input (or,
with ``--detector``, the whole detector's ``test_step`` on an image through
the config's test pipeline, as benchmark_detector.py does) under
``mmceformer.utils.roofline.op_records`` and prints per aten op: calls,
median time, share, the bytes it must move, its MACs, which bound applies,
the bound's time and the ratio of time to bound, and the memory it
faulted in (minor page faults of new tensors, with their time at the cost
per fault that the machine probe measures: the part of an op's time that
is the allocator's, not the kernel's). Random weights, eval,
batch 1, CPU. Time is measured per op call inside a dispatch mode, which
adds Python overhead to each call: the eager time of the same forward
without the mode is printed beside the sum, so the overhead is visible.
Kernels that do not go through torch's dispatcher (mmcv's compiled ops:
RoIAlign, NMS, deformable attention's CUDA kernel) are in no row: with
``--detector`` the eager time includes them, the sum of the rows does not.

``--paths`` (backbones only) then times the same forward on the deployment
paths, interleaved (median of ``--repeats`` after two warm-up rounds):
``eager``; ``compiled``, ``torch.compile`` (inductor) of the backbone; and
``onnxruntime``, the backbone exported as tools/deploy/export_onnx.py does
(static token sampling) and run by onnxruntime's CPU provider at torch's
thread count. Each is printed against the eager ops' summed bound: the
compiled and exported graphs may fuse passes and so move fewer bytes than
that sum, which shows as a ratio below the eager one.
"""
import argparse
import os.path as osp
import statistics
import sys
import tempfile
import time

import torch
from mmengine.config import Config, DictAction

import mmceformer  # noqa: F401
from mmceformer.utils.allocator import (add_malloc_argument, malloc_note,
                                        set_malloc)
from mmceformer.utils import roofline
from mmceformer.utils.complexity import build_model, interleaved_latency

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
#: deployment paths that ``--paths`` times
PATHS = ('eager', 'compiled', 'onnxruntime')


def detector_call(cfg: Config, image_size=(1333, 800), deploy: bool = False):
    """``fn()`` running the whole detector's ``test_step`` once on a
    synthetic image through the config's test pipeline, in eval mode,
    random weights."""
    from benchmark_detector import build_detector, synthetic_image, test_inputs
    model = build_detector(cfg, None, 'cpu', False, deploy)
    data = test_inputs(cfg, synthetic_image(*image_size))
    return lambda: model.test_step(data)


def backbone_and_input(cfg: Config, shape=(224, 224), deploy: bool = False):
    """The config's backbone in eval mode (random weights, deploy form if
    asked) and a random (1, 3, H, W) input."""
    model, _ = build_model(cfg)
    backbone = model.backbone
    backbone.eval()  # (mmpretrain backbones' train() returns None)
    if deploy and hasattr(backbone, 'switch_to_deploy'):
        backbone.switch_to_deploy()
    return backbone, torch.randn(1, 3, *shape)


def path_calls(backbone, x, paths, workdir: str) -> dict:
    """``{path: fn}``: ``fn()`` runs the backbone on ``x`` by that path."""
    unknown = set(paths) - set(PATHS)
    if unknown:
        raise ValueError(f'--paths must be among {PATHS}, got '
                         f'{sorted(unknown)}')
    calls = {}
    if 'eager' in paths:
        calls['eager'] = lambda: backbone(x)
    if 'compiled' in paths:
        compiled = torch.compile(backbone)
        calls['compiled'] = lambda: compiled(x)
    if 'onnxruntime' in paths:
        sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)),
                                    '..', 'deploy'))
        from export_onnx import ExportWrapper, export, ort_session
        holder = torch.nn.Module()  # ExportWrapper exports model.backbone
        holder.backbone = backbone
        path = osp.join(workdir, 'backbone.onnx')
        export(ExportWrapper(holder, backbone_only=True).eval(), x, path)
        session = ort_session(path)
        feed = {'input': x.numpy()}
        calls['onnxruntime'] = lambda: session.run(None, feed)
    return {p: calls[p] for p in paths}


def time_paths(calls: dict, bound: float, repeats: int) -> list:
    """Per path: ``seconds`` (median, interleaved, after two warm-up
    rounds: compilation), ``vs_eager`` (seconds / the eager path's, when
    timed) and ``ratio`` (seconds / ``bound``)."""
    seconds = interleaved_latency(list(calls.values()), 2, repeats)
    eager = dict(zip(calls, seconds)).get('eager')
    return [
        dict(path=p, seconds=t, vs_eager=t / eager if eager else None,
             ratio=t / bound) for p, t in zip(calls, seconds)
    ]


def paths_table(rows, bound: float) -> str:
    lines = [
        '| path | ms | time / eager | bound ms (eager ops) | time / bound |',
        '|---|---|---|---|---|'
    ]
    for r in rows:
        vs = '-' if r['vs_eager'] is None else f"{r['vs_eager']:.2f}"
        lines.append(f"| {r['path']} | {1e3 * r['seconds']:.1f} | {vs} | "
                     f"{1e3 * bound:.1f} | {r['ratio']:.1f}x |")
    return '\n'.join(lines)


def eager_seconds(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` without the dispatch mode."""
    times = []
    with torch.no_grad():
        fn()
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--shape', type=int, nargs=2, default=[224, 224],
                        metavar=('H', 'W'))
    parser.add_argument('--detector', action='store_true')
    parser.add_argument('--image-size', type=int, nargs=2,
                        default=[1333, 800], metavar=('W', 'H'))
    parser.add_argument('--deploy', action='store_true',
                        help="the backbone's switch_to_deploy() form")
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--top', type=int, default=15)
    parser.add_argument('--paths', nargs='+', choices=PATHS,
                        help='time the backbone on these deployment paths')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    add_malloc_argument(parser)
    args = parser.parse_args(argv)
    set_malloc(args.malloc)
    if args.paths and args.detector:
        parser.error('--paths times backbones; drop --detector')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    peaks = roofline.machine_peaks()
    if args.detector:
        fn = detector_call(cfg, tuple(args.image_size), args.deploy)
    else:
        backbone, x = backbone_and_input(cfg, tuple(args.shape), args.deploy)
        fn = lambda: backbone(x)  # noqa: E731
    records = roofline.op_records(fn, repeats=args.repeats)
    rows = roofline.by_op(records, peaks)
    eager = eager_seconds(fn, args.repeats)
    what = (f'detector test_step, {args.image_size[0]}x{args.image_size[1]}'
            f' image' if args.detector else
            f'backbone, 1x3x{args.shape[0]}x{args.shape[1]}')
    print(f'{osp.basename(args.config)}: {what}'
          f'{", deploy form" if args.deploy else ""}; CPU, '
          f'{torch.get_num_threads()} threads, median of {args.repeats}, '
          f'{malloc_note(args.malloc)}')
    print(f"machine: {peaks['bandwidth'] / 1e9:.1f} GB/s copy bandwidth, "
          f"{peaks['macs_per_s'] / 1e9:.1f} GMAC/s fp32 GEMM, "
          f"{1e6 * peaks['fault_s']:.2f} us per minor page fault "
          f"({roofline.PAGE_BYTES // 1024} KB pages)")
    faults = sum(r['faults'] for r in records)
    print(f'page faults: {faults * roofline.PAGE_BYTES / 1e6:.0f} MB of '
          f"new pages per forward, {1e3 * faults * peaks['fault_s']:.1f} ms "
          'at that cost')
    total = sum(r['seconds'] for r in records)
    print(f'sum of op times {1e3 * total:.1f} ms; the same forward without '
          f'the dispatch mode {1e3 * eager:.1f} ms')
    print(roofline.table(rows, args.top))
    result = dict(peaks=peaks, rows=rows, eager=eager)
    if args.paths:
        bound = sum(r['bound'] for r in rows)
        with tempfile.TemporaryDirectory() as workdir, torch.no_grad():
            calls = path_calls(backbone, x, args.paths, workdir)
            result['paths'] = time_paths(calls, bound, args.repeats)
        print(f'deployment paths, interleaved, median of {args.repeats} '
              'after 2 warm-up rounds:')
        print(paths_table(result['paths'], bound))
    return result


if __name__ == '__main__':
    main()
