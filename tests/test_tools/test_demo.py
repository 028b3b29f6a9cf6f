"""The demo pipeline on a few toy images, and resuming after a kill."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.mmcv_ops  # Mask R-CNN needs RoIAlign, nms

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tools'))
FAST = [
    'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
    'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
    'test_dataloader.num_workers=0'
]


def test_demo_pipeline_writes_metrics_and_pictures(tmp_path):
    import demo
    metrics, pictures = demo.main([
        '--work-dir',
        str(tmp_path / 'work'), '--data-root',
        str(tmp_path / 'toy'), '--train-images', '4', '--val-images', '2',
        '--pictures', '2', '--cfg-options', *FAST
    ])
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP'):
        assert key in metrics
    saved = json.loads((tmp_path / 'work' / 'metrics.json').read_text())
    assert saved == metrics
    assert len(pictures) == 3 and pictures[-1].endswith('tokens.png')
    for picture in pictures:
        assert os.path.getsize(picture) > 1000


def test_interrupted_training_resumes(tmp_path):
    import demo

    from mmceformer.datasets import make_toy_coco
    data_root = str(tmp_path / 'toy')
    make_toy_coco(data_root, num_train=4, num_val=2, seed=2)
    work_dir = tmp_path / 'work'
    options = demo.data_options(data_root) + [
        'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
        'train_cfg.val_interval=100'
    ]
    command = [
        sys.executable,
        str(ROOT / 'tools' / 'train.py'), demo.CONFIG, '--work-dir',
        str(work_dir), '--resume', '--cfg-options', *options,
        'train_cfg.max_epochs=100'
    ]
    first = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # last_checkpoint is written once a checkpoint is complete
    while not (work_dir / 'last_checkpoint').exists():
        assert first.poll() is None and time.time() < deadline
        time.sleep(0.2)
    first.kill()
    first.wait()
    done = int((work_dir /
                'last_checkpoint').read_text().split('_')[-1].split('.')[0])
    assert 1 <= done < 100
    # Re-run with a target a few epochs further: it resumes, not restarts.
    result = subprocess.run(
        command[:-1] + [f'train_cfg.max_epochs={done + 2}'],
        capture_output=True,
        text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f'resumed epoch: {done}, iter: {done}' in result.stdout + \
        result.stderr
    last = torch.load(work_dir / f'epoch_{done + 2}.pth')
    assert last['meta']['iter'] == done + 2  # one iteration per epoch
