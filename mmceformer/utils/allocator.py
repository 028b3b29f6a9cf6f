"""The C allocator's policy for large tensors, for CPU inference.

PyTorch's CPU tensors come from ``malloc``. glibc's allocator maps a
block above its mmap threshold (adapted at run time, 32 MiB at most)
afresh and unmaps it on free, and gives freed heap above its trim
threshold (twice the mmap threshold) back to the system. Every large new
tensor is therefore first written through minor page faults, one per
4 KB page, which the kernel serves by zeroing the page: on the 2-core
machine of docs/benchmarks.md that was about 1.3 us per page, about 7
times a copy of the same bytes, and up to half of a windowed attention's
time at 800x1344. ``malloc='retain'`` keeps freed
memory mapped instead (blocks up to 1 GB from the heap, no trimming below
2 GB), so that a forward's temporaries reuse the pages of the previous
forward's. The price is resident memory: the heap stays at the largest
size a forward needed. ``'system'`` leaves the allocator as it is.

The same policy for a whole process, from its start, is glibc's
environment ``MALLOC_MMAP_THRESHOLD_=1073741824
MALLOC_TRIM_THRESHOLD_=2147483647`` (e.g. for ``tools/test.py``). Older
glibc releases refuse an mmap threshold above 32 MiB: :func:`set_malloc`
then raises, while the environment variable is ignored without a word.
"""
import ctypes
import ctypes.util

#: ``malloc`` policies of :func:`set_malloc`
MALLOC_MODES = ('system', 'retain')
#: glibc's mallopt parameters (malloc.h), by name
_MALLOPT = dict(M_TRIM_THRESHOLD=-1, M_MMAP_THRESHOLD=-3)
#: the policy of ``'retain'``
RETAIN_MMAP_THRESHOLD = 1 << 30
RETAIN_TRIM_THRESHOLD = 2**31 - 1


def _glibc():
    """The process's C library if it is glibc (which has ``mallopt``),
    else None."""
    name = ctypes.util.find_library('c')
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, 'gnu_get_libc_version') or \
            not hasattr(libc, 'mallopt'):
        return None
    return libc


def set_malloc(mode: str) -> bool:
    """Apply the allocator policy ``mode`` to this process from now on.

    Args:
        mode (str): ``'system'`` (change nothing) or ``'retain'`` (keep
            freed memory mapped, see the module docstring).

    Returns:
        bool: whether the allocator's settings were changed.

    Raises:
        ValueError: ``mode`` is not one of ``MALLOC_MODES``.
        RuntimeError: ``'retain'`` where the C library is not glibc, or
            glibc refused a setting (older releases cap the mmap threshold
            at 32 MiB).
    """
    if mode not in MALLOC_MODES:
        raise ValueError(f'malloc must be one of {MALLOC_MODES}, got '
                         f'{mode!r}')
    if mode == 'system':
        return False
    libc = _glibc()
    if libc is None:
        raise RuntimeError("malloc='retain' needs glibc's mallopt; this "
                           "process's C library is not glibc: use "
                           "malloc='system'")
    for name, value in (('M_MMAP_THRESHOLD', RETAIN_MMAP_THRESHOLD),
                        ('M_TRIM_THRESHOLD', RETAIN_TRIM_THRESHOLD)):
        if libc.mallopt(_MALLOPT[name], value) != 1:
            libc.gnu_get_libc_version.restype = ctypes.c_char_p
            version = libc.gnu_get_libc_version().decode()
            raise RuntimeError(
                f"malloc='retain': glibc {version} refused {name}={value} "
                "(older releases cap the mmap threshold at 32 MiB); use "
                "malloc='system'")
    return True


def add_malloc_argument(parser) -> None:
    """``--malloc {system,retain}`` on a timing tool's argparse parser;
    apply it with ``set_malloc(args.malloc)`` before building models."""
    parser.add_argument(
        '--malloc',
        choices=MALLOC_MODES,
        default='system',
        help="the C allocator's policy: 'system' as the process has it, "
        "'retain' keeps freed memory mapped (no page faults on a "
        'forward\'s large temporaries; glibc only; '
        'mmceformer.utils.allocator)')


def malloc_note(mode: str) -> str:
    """What a tool's header says about the policy it ran under."""
    return ('malloc retains freed memory (--malloc retain)'
            if mode == 'retain' else "the system's malloc settings")
