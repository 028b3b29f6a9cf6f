"""Time and peak memory of the attention kernels against SDPA.

    python tools/benchmark_attention.py                     # CPU, defaults
    python tools/benchmark_attention.py --lengths 197 4096 --device cuda
    python tools/benchmark_attention.py --crossover --lengths 49 197 576

For each sequence length N (B=1, H=6, D=64 by default) it measures, in the
same run: ``F.scaled_dot_product_attention`` (softmax), ``linear_attention``
(cos-reweighted, eq. 3-9) and E-Attention at ``--keep-ratio``
(``mmceformer.ops.e_attention``: one pass over the keys for KV, z and the
CLS row, inverse-CDF sampling, the kept queries only, eq. 3-14). It
prints the median time over ``--repeats`` runs after ``--warmup`` runs
(the three kernels interleaved), the peak memory allocated during one call
(CPU: growth of the peak resident set size in a fresh process, its
high-water mark reset first; CUDA: ``max_memory_allocated``), and both as
ratios to SDPA. Nothing here is a test: numbers depend on the
machine.
"""
import argparse
import subprocess
import sys

import torch
import torch.nn.functional as F

from mmceformer.ops import e_attention, linear_attention, num_kept_tokens
from mmceformer.utils.complexity import interleaved_latency


def sdpa(q, k, v, keep_ratio):
    return F.scaled_dot_product_attention(q, k, v)


def linear(q, k, v, keep_ratio):
    return linear_attention(q, k, v)


def eattn(q, k, v, keep_ratio):
    num_samples = num_kept_tokens(keep_ratio, q.shape[2] - 1)
    return e_attention(q, k, v, num_samples)[0]


METHODS = {'sdpa': sdpa, 'linear': linear, 'eattn': eattn}


def _status_bytes(field):
    """VmRSS / VmHWM of this process, in bytes."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f'{field} not in /proc/self/status')


def _peak_rss_child(method, num, batch, heads, dim, keep_ratio):
    """In a fresh process: the growth of peak RSS during one call. The
    kernel's high-water mark is reset first (``clear_refs`` 5), so the
    import of torch and friends does not count."""
    gen = torch.Generator().manual_seed(num)
    q, k, v = (
        torch.randn(batch, heads, num, dim, generator=gen) for _ in range(3))
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    before = _status_bytes('VmRSS')
    with torch.no_grad():
        METHODS[method](q, k, v, keep_ratio)
    print(max(_status_bytes('VmHWM') - before, 0))


def peak_memory(method, num, args, device):
    """Bytes allocated at the peak of one call, above what existed before.
    CUDA: ``max_memory_allocated``. CPU: the growth of the peak resident
    set size in a fresh process (the kernel's high-water mark), so that
    every measurement starts clean."""
    if device.type == 'cuda':
        gen = torch.Generator().manual_seed(num)
        q, k, v = (
            torch.randn(args.batch, args.heads, num, args.dim,
                        generator=gen).to(device) for _ in range(3))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.no_grad():
            METHODS[method](q, k, v, args.keep_ratio)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    out = subprocess.run([
        sys.executable, __file__, '--peak-child', method,
        str(num),
        str(args.batch),
        str(args.heads),
        str(args.dim),
        str(args.keep_ratio)
    ],
                         check=True,
                         capture_output=True,
                         text=True)
    return int(out.stdout.strip().splitlines()[-1])


def random_qkv(args, num, device):
    """Reproducible (B, H, N, D) queries, keys and values."""
    gen = torch.Generator().manual_seed(num)
    return tuple(
        torch.randn(args.batch, args.heads, num, args.dim,
                    generator=gen).to(device) for _ in range(3))


def run(args, device):
    rows = []
    for num in args.lengths:
        q, k, v = random_qkv(args, num, device)
        row = {'N': num}
        seconds = interleaved_latency([
            lambda m=method: m(q, k, v, args.keep_ratio)
            for method in METHODS.values()
        ], args.warmup, args.repeats, device)
        for name, median in zip(METHODS, seconds):
            row[name + '_ms'] = 1e3 * median
            row[name + '_mib'] = peak_memory(name, num, args, device) / 2**20
        rows.append(row)
    return rows


def crossover(args, device):
    """Time the two evaluation orders of the same linear attention
    (``QUADRATIC_COST_RATIO`` forced to infinity / 0) for each N, with
    their MAC ratio: the measurement behind the dispatcher's constant."""
    la = sys.modules['mmceformer.ops.linear_attention']  # not the function
    rows = []
    for num in args.lengths:
        q, k, v = random_qkv(args, num, device)
        saved = la.QUADRATIC_COST_RATIO

        def run_with(ratio):
            la.QUADRATIC_COST_RATIO = ratio
            try:
                return linear_attention(q, k, v, pos_weight=args.pos_weight)
            finally:
                la.QUADRATIC_COST_RATIO = saved

        quad_s, lin_s = interleaved_latency(
            [lambda: run_with(float('inf')), lambda: run_with(0.)],
            args.warmup, args.repeats, device)
        feats = 1 if args.pos_weight is None else (
            2 if args.pos_weight == '1d' else 4)
        linear = 2 * num * feats * args.dim * (args.dim + 1)
        quadratic = num * num * (2 * args.dim + feats + 1)
        rows.append((num, quadratic / linear, 1e3 * quad_s, 1e3 * lin_s,
                     la.prefer_quadratic(num, num, args.dim, args.dim,
                                         feats)))
    print('| N | MACs quadratic / linear | quadratic ms | linear ms | '
          'linear / quadratic time | dispatcher takes |\n|---|---|---|---|'
          '---|---|')
    for num, macs, quad, lin, quadratic in rows:
        print(f"| {num} | {macs:.2f} | {quad:.3f} | {lin:.3f} | "
              f"{lin / quad:.2f}x | {'quadratic' if quadratic else 'linear'}"
              ' |')
    return rows


def format_table(rows):
    lines = [
        '| N | SDPA ms | linear ms | E-Attn ms | SDPA / linear time | '
        'SDPA / E-Attn time | SDPA MiB | linear MiB | E-Attn MiB | '
        'linear / SDPA mem | E-Attn / SDPA mem |', '|' + '---|' * 11
    ]
    for r in rows:
        lines.append(
            f"| {r['N']} | {r['sdpa_ms']:.2f} | {r['linear_ms']:.2f} | "
            f"{r['eattn_ms']:.2f} | {r['sdpa_ms'] / r['linear_ms']:.2f}x | "
            f"{r['sdpa_ms'] / r['eattn_ms']:.2f}x | {r['sdpa_mib']:.1f} | "
            f"{r['linear_mib']:.1f} | {r['eattn_mib']:.1f} | "
            f"{r['linear_mib'] / max(r['sdpa_mib'], 1e-9):.2f} | "
            f"{r['eattn_mib'] / max(r['sdpa_mib'], 1e-9):.2f} |")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--lengths', type=int, nargs='+', default=[197, 1024, 4096, 16384])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--heads', type=int, default=6)
    parser.add_argument('--dim', type=int, default=64)
    parser.add_argument('--keep-ratio', type=float, default=0.7)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help='torch CPU threads (default: torch decides)')
    parser.add_argument(
        '--crossover',
        action='store_true',
        help='time the quadratic against the linear order of the linear '
        'kernel instead (the dispatcher constant)')
    parser.add_argument(
        '--pos-weight',
        default='1d',
        type=lambda s: None if s == 'none' else s,
        help="'1d', '2d' (needs a square N) or 'none', for --crossover")
    parser.add_argument('--peak-child', nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peak_child:
        method, num, batch, heads, dim, keep = args.peak_child
        _peak_rss_child(method, int(num), int(batch), int(heads), int(dim),
                        float(keep))
        return None
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.crossover:
        print(f'# device={device} threads={torch.get_num_threads()} '
              f'B={args.batch} H={args.heads} D={args.dim} '
              f'pos_weight={args.pos_weight}, median of {args.repeats}')
        return crossover(args, device)
    print(f'# device={device} threads={torch.get_num_threads()} '
          f'B={args.batch} H={args.heads} D={args.dim} '
          f'keep_ratio={args.keep_ratio} median of {args.repeats}; memory: '
          'peak growth during one call')
    rows = run(args, device)
    print(format_table(rows))
    return rows


if __name__ == '__main__':
    main()
