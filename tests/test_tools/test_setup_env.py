"""tools/setup_env.sh on environments it must not break, in dry-run mode
(MMCEFORMER_DRY_RUN=1 prints the install commands): an importable torch is
never replaced, and mmcv's build mode follows nvcc, the GPU and FORCE_CUDA,
with the mode in the wheel cache key."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'tools' / 'setup_env.sh'


@pytest.fixture
def fake_env(tmp_path):
    """A venv (no pip) whose 'torch' is a stub: CUDA 12.1 build, no GPU,
    and no torchvision; plus an nvcc stub on PATH."""
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip',
                    str(venv)],
                   check=True)
    site = next(venv.glob('lib/python*/site-packages'))
    (site / 'torch').mkdir()
    (site / 'torch' / '__init__.py').write_text(
        "import os\n__version__ = '2.1.2+cu121'\n"
        "class version:\n    cuda = '12.1'\n"
        'class cuda:\n    @staticmethod\n    def is_available():\n'
        "        return os.environ.get('FAKE_GPU') == '1'\n")
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    nvcc = bin_dir / 'nvcc'
    nvcc.write_text('#!/bin/sh\necho "Cuda compilation tools, release 12.1, '
                    'V12.1.105"\n')
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    return venv / 'bin' / 'python', bin_dir, tmp_path / 'cache'


def plan(fake_env, **env):
    python, bin_dir, cache = fake_env
    result = subprocess.run(['bash', str(SCRIPT)],
                            env=dict(
                                os.environ,
                                MMCEFORMER_PYTHON=str(python),
                                MMCEFORMER_DRY_RUN='1',
                                MMCEFORMER_CACHE=str(cache),
                                PATH=f'{bin_dir}:{os.environ["PATH"]}',
                                **env),
                            capture_output=True,
                            text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_keeps_an_importable_torch(fake_env):
    out = plan(fake_env)
    assert 'keeping torch 2.1.2+cu121' in out
    assert 'install torchvision torch==2.1.2+cu121' in out
    assert 'torch==2.14.1' not in out


@pytest.mark.parametrize('env,mode', [
    (dict(FAKE_GPU='1'), 'cuda12.1-archauto'),
    (dict(FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST='8.0 9.0'),
     'cuda12.1-arch8.0_9.0'),
    (dict(), 'cpu'),  # a CUDA toolkit but no GPU: a CPU runner
    (dict(FAKE_GPU='1', FORCE_CUDA='0'), 'cpu'),
])
def test_mmcv_build_mode_and_cache_key(fake_env, env, mode):
    out = plan(fake_env, **env)
    assert f'-py{sys.version_info[0]}{sys.version_info[1]}-{mode}' in out
    build = next(line for line in out.splitlines() if ' wheel ' in line)
    assert ('FORCE_CUDA=1' in build) == (mode != 'cpu')
    if 'TORCH_CUDA_ARCH_LIST' in env:
        assert 'TORCH_CUDA_ARCH_LIST=8.0 9.0' in build
