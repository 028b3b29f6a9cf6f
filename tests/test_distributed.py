"""Distributed training on CPUs, as ``tools/dist_train.sh`` runs it: two
gloo processes, the model wrapped by mmengine's Runner with its default
settings (``find_unused_parameters=False``). Every backbone x attention
mode trains; the launcher passes the config's wrapper settings through."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import variant_names  # noqa: E402

WORKER = Path(__file__).with_name('ddp_worker.py')


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


@pytest.fixture(scope='module')
def ddp_report(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp') / 'report.json'
    port = free_port()
    procs = [
        subprocess.Popen([sys.executable, str(WORKER),
                          str(out)],
                         env=dict(
                             os.environ,
                             RANK=str(rank),
                             LOCAL_RANK=str(rank),
                             WORLD_SIZE='2',
                             MASTER_ADDR='127.0.0.1',
                             MASTER_PORT=port,
                             OMP_NUM_THREADS='1'),
                         stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT,
                         text=True) for rank in range(2)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs[0][-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize('variant', variant_names())
def test_ddp_steps_without_find_unused_parameters(ddp_report, variant):
    assert ddp_report['steps'][variant] == 'ok'


def test_cpu_launcher_passes_wrapper_settings_through(ddp_report):
    settings = ddp_report['settings']
    # mmengine's GPU defaults, on the CPU
    assert settings['default'] == dict(
        type='MMDistributedDataParallel',
        find_unused_parameters=False,
        broadcast_buffers=False,
        device_ids=None)
    assert settings['find_unused']['find_unused_parameters'] is True
    assert settings['find_unused']['broadcast_buffers'] is False
    assert settings['wrapper_cfg']['broadcast_buffers'] is True
    assert settings['wrapper_cfg']['find_unused_parameters'] is True
