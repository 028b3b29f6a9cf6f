"""mmceformer.utils.allocator: the malloc policy of the timing tools."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmceformer.utils import allocator

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ('benchmark', 'benchmark_detector', 'roofline', 'speed_targets')

# A 64 MB tensor (above glibc's largest dynamic mmap threshold) made,
# written and freed eight times: the faults of the last four (the first
# few place the heap around torch's first allocations).
STEADY_FAULTS = """
import resource, sys, torch
from mmceformer.utils.allocator import set_malloc
print(set_malloc(sys.argv[1]))
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(8):
    if i == 4:
        start = faults()
    torch.empty(16 * 2**20).fill_(1.)
print(faults() - start)
"""


def steady_faults(mode):
    env = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}
    out = subprocess.run([sys.executable, '-c', STEADY_FAULTS, mode],
                         capture_output=True, text=True, check=True,
                         env=env, cwd=ROOT).stdout.split()
    return out[0] == 'True', int(out[1])


@pytest.mark.skipif(allocator._glibc() is None, reason='glibc only')
def test_retain_keeps_freed_memory_mapped():
    """With the system's policy each 64 MB tensor is mapped afresh (16384
    pages, each faulted in); with 'retain' it reuses the last one's."""
    changed, system = steady_faults('system')
    assert not changed and system > 4 * 8000
    changed, retained = steady_faults('retain')
    assert changed and retained < system / 10


def test_bad_mode_and_missing_glibc_raise(monkeypatch):
    with pytest.raises(ValueError, match=r"malloc must be one of \('system'"):
        allocator.set_malloc('jemalloc')
    assert allocator.set_malloc('system') is False
    monkeypatch.setattr(allocator, '_glibc', lambda: None)
    with pytest.raises(RuntimeError, match="malloc='retain' needs glibc"):
        allocator.set_malloc('retain')


@pytest.mark.parametrize('tool', TOOLS)
def test_timing_tools_take_the_policy(tool, capsys):
    sys.path.insert(0, str(ROOT / 'tools' / 'analysis'))
    module = __import__(tool)
    with pytest.raises(SystemExit):
        module.main(['--malloc', 'jemalloc', 'CONFIG'])
    assert "invalid choice: 'jemalloc'" in capsys.readouterr().err


@pytest.mark.skipif(allocator._glibc() is None, reason='glibc only')
def test_a_refused_setting_names_it_and_the_glibc_version(monkeypatch):
    libc = allocator._glibc()

    class Refusing:
        gnu_get_libc_version = libc.gnu_get_libc_version

        @staticmethod
        def mallopt(param, value):
            return 0

    monkeypatch.setattr(allocator, '_glibc', lambda: Refusing())
    with pytest.raises(RuntimeError,
                       match=r'glibc \d+\.\d+ refused M_MMAP_THRESHOLD'):
        allocator.set_malloc('retain')
