"""Each op of a forward against this machine's roofline.

An op cannot run faster than its memory traffic at the machine's bandwidth
or its multiply-accumulates at its GEMM rate: ``bound = max(bytes / BW,
MACs / peak)``. The ratio ``time / bound`` says how far an op is from what
the hardware allows; an op many times above its bound is an implementation
gap (layout, extra passes, a slow kernel), not the cost of the model.

``op_records(fn)`` runs ``fn`` under a dispatch mode that sees every aten
op once (the op's own kernel, whatever it calls inside, is timed as one)
and records, per call: its name, the seconds it took (median over
``repeats`` runs of ``fn``), the bytes it has to move at least and its
MACs. Bytes: every tensor it reads plus every tensor it writes, once each;
views move nothing; an in-place scatter or index copy moves its source
elements (read and written, and read again where it accumulates) and its
index, not the whole destination; a copy reads its source and writes its
destination; a gather or index reads as much as it writes. MACs: matrix
products, convolutions and attention, as ``torch.utils.flop_counter``
counts them (0 for element-wise ops, whose bound is their bytes). Pure
torch, no OpenMMLab import.

The bound assumes memory that is already mapped. A large new tensor is
not: glibc's allocator maps allocations above its threshold (32 MiB at
most) afresh and returns freed heap above its trim threshold to the
system, so writing such a tensor first takes a minor page fault per page,
which the kernel serves by zeroing the page. Each record therefore also
counts the minor page faults of the process during the op (``faults``,
the median over the runs; all threads, ``getrusage``), and
:func:`machine_peaks` measures what one costs (``fault_s``), so that the
share of an op's time spent on first touch is visible beside its bound.
"""
import math
import statistics
import time
from collections import OrderedDict
from typing import Callable, Dict, List, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

try:
    import resource
except ImportError:  # not on Windows: no fault counts there
    resource = None

#: bytes a minor page fault maps
PAGE_BYTES = resource.getpagesize() if resource else 4096
#: in-place ops that write (or add) rows or elements into a larger
#: destination, leaving the rest of it untouched
_ROW_WRITES = ('scatter_', 'scatter_add_', 'index_copy_', 'index_put_',
               'index_add_')
#: ops that read as many elements as they write, from a larger source
_ROW_READS = ('gather', 'index', 'index_select', 'take_along_dim',
              'embedding')
#: ops that only write their output
_WRITES_ONLY = ('zeros', 'zeros_like', 'new_zeros', 'fill_', 'zero_',
                'full', 'full_like', 'ones', 'ones_like', 'arange',
                'new_full')
#: ops that allocate without touching memory
_FREE = ('empty', 'empty_like', 'new_empty', 'empty_strided',
         'new_empty_strided', 'detach', 'lift_fresh', 'alias', '_unsafe_view',
         '_reshape_alias')


def minor_faults() -> int:
    """Minor page faults of this process so far, all threads (0 where
    the platform does not count them)."""
    if resource is None:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def machine_peaks(size_mb: int = 64,
                  gemm: int = 1024,
                  repeats: int = 10) -> Dict[str, float]:
    """This machine's memory bandwidth (``bandwidth``, bytes/s, a copy of
    ``size_mb`` MB: read once, written once), fp32 GEMM rate
    (``macs_per_s``, ``gemm``-cubed ``torch.mm``), each the best of
    ``repeats`` at torch's thread count, and the cost of a minor page
    fault (``fault_s``, seconds): the same copy into a new tensor, less
    the copy into a mapped one, per fault it took (0 where the allocator
    reused mapped memory, so that the new tensor took fewer faults than
    half its pages)."""
    src = torch.rand(size_mb * 2**20 // 4)
    dst = torch.empty_like(src)
    a = torch.rand(gemm, gemm)
    b = torch.rand(gemm, gemm)
    out = torch.empty(gemm, gemm)
    copy_s, gemm_s, fresh = [], [], []
    for _ in range(repeats + 1):  # the first of each warms up
        start = time.perf_counter()
        dst.copy_(src)
        copy_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        gemm_s.append(time.perf_counter() - start)
        faults = minor_faults()
        start = time.perf_counter()
        src.clone()  # a new tensor, freed at once
        fresh.append((time.perf_counter() - start, minor_faults() - faults))
    # only runs that mapped most of the tensor afresh: a few faults (a
    # partly reused block) would turn timing noise into a per-fault cost
    pages = src.nbytes // PAGE_BYTES
    fault_s = [(t - min(copy_s[1:])) / n for t, n in fresh[1:]
               if n >= pages // 2]
    return dict(
        bandwidth=2 * src.nbytes / min(copy_s[1:]),
        macs_per_s=gemm**3 / min(gemm_s[1:]),
        fault_s=max(0., statistics.median(fault_s)) if fault_s else 0.)


def _tensors(tree) -> List[torch.Tensor]:
    leaves, _ = tree_flatten(tree)
    return [t for t in leaves if isinstance(t, torch.Tensor)]


def _unique_bytes(tensors: Sequence[torch.Tensor]) -> int:
    """Bytes of the tensors at their logical size (an expanded tensor
    counts every element it shows), a tensor passed twice counted once."""
    seen = set()
    total = 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.storage_offset(),
               tuple(t.shape), tuple(t.stride()))
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def _is_view(func) -> bool:
    """Whether the op returns a view of an input (moves no data)."""
    returns = func._schema.returns
    return bool(returns) and all(
        r.alias_info is not None and not r.alias_info.is_write
        for r in returns)


def _row_write_bytes(name: str, args) -> int:
    """Index read, values read, destination elements written (and read
    too where the op accumulates into them)."""
    self = args[0]
    elem = self.element_size()
    accumulate = name in ('scatter_add_', 'index_add_') or (
        name == 'index_put_' and len(args) > 3 and bool(args[3]))
    if name == 'index_put_':  # (self, indices, values, accumulate)
        indices = [i for i in args[1] if i is not None]
        count = 1
        for i in indices:  # bool masks select their True entries
            count *= int(i.sum()) if i.dtype == torch.bool else i.numel()
        indexed = sum(1 if i.dtype != torch.bool else i.dim()
                      for i in indices)
        row = self[(0, ) * indexed].numel() if indexed <= self.dim() else 1
        written = count * row * elem
        index_bytes = _unique_bytes(indices)
        values = args[2]
    elif name.startswith('scatter'):  # (self, dim, index, src | value)
        index, values = args[2], args[3]
        written = index.numel() * elem
        index_bytes = index.numel() * index.element_size()
    else:  # index_copy_ / index_add_: (self, dim, index, source)
        index, values = args[2], args[3]
        written = values.numel() * elem
        index_bytes = index.numel() * index.element_size()
    read = values.numel() * values.element_size() if isinstance(
        values, torch.Tensor) else 0
    return index_bytes + read + written * (2 if accumulate else 1)


def op_bytes(func, args, kwargs, out) -> int:
    """The least bytes the op has to move (module docstring)."""
    name = func.__name__.split('.')[0]
    if name in _FREE or _is_view(func):
        return 0
    kwargs = dict(kwargs)
    destination = kwargs.pop('out', None)  # written, not read
    inputs = _tensors((args, kwargs))
    outputs = _tensors(out if destination is None else destination)
    if name in _WRITES_ONLY:
        return _unique_bytes(outputs)
    if name == 'copy_':  # (self, src): src read, self written
        return _unique_bytes(inputs[1:]) + _unique_bytes(inputs[:1])
    if name in _ROW_WRITES:
        return _row_write_bytes(name, args)
    if name in _ROW_READS:
        index = _unique_bytes(
            [t for t in inputs[1:] if not t.is_floating_point()])
        return 2 * _unique_bytes(outputs) + index
    return _unique_bytes(inputs) + _unique_bytes(outputs)


def op_macs(func, args, out) -> int:
    """MACs of one call of a matrix product, convolution or attention op
    (the ops ``torch.utils.flop_counter`` counts in a forward); 0 for any
    other op, whose bound is its bytes."""
    name = func.__name__.split('.')[0]
    if name in ('mm', 'bmm', 'addmm', 'baddbmm'):
        a, b = (args[1], args[2]) if name.startswith('add') else args[:2]
        return a.numel() * b.shape[-1]  # (.., m, k) @ (.., k, n)
    if name == 'linear':
        x, weight = args[:2]
        return x.numel() * weight.shape[0]
    if name in ('convolution', '_convolution', 'mkldnn_convolution'):
        x, weight = args[:2]
        transposed = name != 'mkldnn_convolution' and bool(args[6])
        # MACs per output element (C_in / g) kh kw; per input element of a
        # transposed one (C_out / g) kh kw; weight (dim 0, dim 1, kh, kw)
        per_element = math.prod(weight.shape[1:])
        return (x if transposed else _tensors(out)[0]).numel() * per_element
    if name.startswith('_scaled_dot_product') or \
            name == 'scaled_dot_product_attention':
        query, key, value = args[:3]  # (..., Nq, E), (..., Nk, E), Ev
        return (query.numel() // query.shape[-1] * key.shape[-2] *
                (query.shape[-1] + value.shape[-1]))
    return 0


class _Recorder(TorchDispatchMode):

    def __init__(self, count: bool):
        super().__init__()
        self.count = count
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        faults = minor_faults()
        start = time.perf_counter()
        out = func(*args, **kwargs)
        seconds = time.perf_counter() - start
        record = dict(op=func.__name__.split('.')[0], seconds=seconds,
                      faults=minor_faults() - faults)
        if self.count:
            record['bytes'] = op_bytes(func, args, kwargs, out)
            record['macs'] = int(op_macs(func, args, out))
        self.calls.append(record)
        return out


def op_records(fn: Callable[[], object],
               repeats: int = 5,
               warmup: int = 1) -> List[Dict]:
    """Per aten op call of ``fn()`` (no_grad): ``op``, ``seconds`` and
    ``faults`` (minor page faults; medians over ``repeats`` runs, after
    ``warmup``), ``bytes`` and ``macs``. The
    runs must call the same ops in the same order (an eval forward does;
    token sampling draws its grid deterministically in eval)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f'repeats must be >= 1 and warmup >= 0, got '
                         f'{repeats} and {warmup}')
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        counted = _Recorder(count=True)
        with counted:
            fn()
        timings = []
        for _ in range(repeats):
            timed = _Recorder(count=False)
            with timed:
                fn()
            ops = [c['op'] for c in timed.calls]
            if ops != [c['op'] for c in counted.calls]:
                raise RuntimeError('fn() called other ops from one run to '
                                   'the next: op_records needs a '
                                   'deterministic forward')
            timings.append([(c['seconds'], c['faults'])
                            for c in timed.calls])
    for i, call in enumerate(counted.calls):
        call['seconds'] = statistics.median(t[i][0] for t in timings)
        call['faults'] = int(statistics.median(t[i][1] for t in timings))
    return counted.calls


def bound_seconds(record: Dict, peaks: Dict[str, float]) -> float:
    """``max(bytes / bandwidth, MACs / GEMM rate)`` of one op call."""
    return max(record['bytes'] / peaks['bandwidth'],
               record['macs'] / peaks['macs_per_s'])


def by_op(records: Sequence[Dict], peaks: Dict[str, float]) -> List[Dict]:
    """Records summed per op name, most time first: ``calls``,
    ``seconds``, ``share`` (of the total), ``bytes``, ``macs``,
    ``bound`` (seconds, the sum of the calls' bounds), ``ratio``
    (``seconds / bound``; inf for an op that moves nothing), ``limit``
    (``'GEMM'`` or ``'memory'``, whichever bound is the larger),
    ``faults`` (minor page faults) and ``fault_seconds`` (``faults`` at the
    machine's ``fault_s``, 0 where ``peaks`` has none)."""
    groups = OrderedDict()
    total = sum(r['seconds'] for r in records) or 1.
    for r in records:
        g = groups.setdefault(
            r['op'],
            dict(op=r['op'], calls=0, seconds=0., bytes=0, macs=0, bound=0.,
                 faults=0))
        g['calls'] += 1
        g['seconds'] += r['seconds']
        g['bytes'] += r['bytes']
        g['macs'] += r['macs']
        g['bound'] += bound_seconds(r, peaks)
        g['faults'] += r.get('faults', 0)
    rows = sorted(groups.values(), key=lambda g: -g['seconds'])
    for g in rows:
        g['share'] = g['seconds'] / total
        g['ratio'] = g['seconds'] / g['bound'] if g['bound'] else float('inf')
        g['limit'] = 'GEMM' if g['macs'] / peaks['macs_per_s'] > \
            g['bytes'] / peaks['bandwidth'] else 'memory'
        g['fault_seconds'] = g['faults'] * peaks.get('fault_s', 0.)
    return rows


def table(rows: Sequence[Dict], top: int = 15) -> str:
    """Markdown: the ``top`` ops by time, then everything else as one row
    and the total."""
    head = ('| op | calls | ms | share | MB moved | GMACs | limit | '
            'bound ms | time / bound | MB faulted | fault ms |')
    lines = [head, '|---|---|---|---|---|---|---|---|---|---|---|']

    def line(r):
        ratio = '-' if r['ratio'] == float('inf') else f"{r['ratio']:.1f}x"
        return (f"| {r['op']} | {r['calls']} | {1e3 * r['seconds']:.2f} | "
                f"{100 * r['share']:.1f}% | {r['bytes'] / 1e6:.1f} | "
                f"{r['macs'] / 1e9:.3f} | {r.get('limit', '-')} | "
                f"{1e3 * r['bound']:.2f} | {ratio} | "
                f"{r.get('faults', 0) * PAGE_BYTES / 1e6:.1f} | "
                f"{1e3 * r.get('fault_seconds', 0.):.2f} |")

    for r in rows[:top]:
        lines.append(line(r))
    for name, group in (('(other ops)', rows[top:]), ('total', rows)):
        if not group:
            continue
        merged = dict(
            op=name,
            calls=sum(r['calls'] for r in group),
            seconds=sum(r['seconds'] for r in group),
            share=sum(r['share'] for r in group),
            bytes=sum(r['bytes'] for r in group),
            macs=sum(r['macs'] for r in group),
            bound=sum(r['bound'] for r in group),
            faults=sum(r.get('faults', 0) for r in group),
            fault_seconds=sum(r.get('fault_seconds', 0.) for r in group))
        merged['ratio'] = (merged['seconds'] / merged['bound']
                           if merged['bound'] else float('inf'))
        lines.append(line(merged))
    return '\n'.join(lines)
