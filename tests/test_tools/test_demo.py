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


CLS_FAST = [
    'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
    'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
    'val_dataloader.num_workers=0', 'test_dataloader.num_workers=0'
]


def test_demo_runs_both_stages(tmp_path):
    import demo
    work_dir = tmp_path / 'work'
    metrics, pictures, adaptivity = demo.main([
        '--work-dir',
        str(work_dir), '--data-root',
        str(tmp_path / 'toy'), '--cls-data-root',
        str(tmp_path / 'toy_cls'), '--train-images', '4', '--val-images', '2',
        '--cls-train-images', '4', '--cls-val-images', '2', '--pictures', '2',
        '--cfg-options', *FAST, '--cls-cfg-options', *CLS_FAST
    ])
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP'):
        assert key in metrics
    saved = json.loads((work_dir / 'metrics.json').read_text())
    assert saved == metrics
    assert len(pictures) == 3 and pictures[-1].endswith('tokens.png')
    for picture in pictures:
        assert os.path.getsize(picture) > 1000
    # Stage 2 started from stage 1's checkpoint, through init_cfg.
    pretrained = (work_dir / 'pretrain' / 'last_checkpoint').read_text()
    assert pretrained.endswith('epoch_1.pth')
    logs = ''.join(p.read_text() for p in (work_dir / 'detect').rglob('*.log'))
    assert f'PretrainedInit: load from {pretrained}' in logs
    # Adaptivity: the two pruning blocks of the toy CEFormer, every cell of
    # the 2 val images (256 / 16 = 16 x 16 cells) counted once per block.
    assert [row['block'] for row in adaptivity] == [2, 3]
    for row in adaptivity:
        assert row['object_cells'] + row['background_cells'] == 2 * 16 * 16
        assert 0 < row['object_kept'] + row['background_kept'] < 2 * 16 * 16
        assert row['ratio'] <= row['ceiling']
    assert json.loads((work_dir / 'adaptivity.json').read_text()) == \
        json.loads(json.dumps(adaptivity))


def test_demo_from_scratch_skips_pretraining(tmp_path):
    import demo
    work_dir = tmp_path / 'work'
    demo.main([
        '--work-dir',
        str(work_dir), '--data-root',
        str(tmp_path / 'toy'), '--cls-data-root',
        str(tmp_path / 'toy_cls'), '--train-images', '4', '--val-images', '2',
        '--pictures', '1', '--from-scratch', '--cfg-options', *FAST
    ])
    assert not (work_dir / 'pretrain').exists()
    assert not (tmp_path / 'toy_cls').exists()
    logs = ''.join(p.read_text() for p in (work_dir / 'detect').rglob('*.log'))
    assert 'PretrainedInit' not in logs


@pytest.mark.parametrize('stage', ['pretrain', 'detect'])
def test_interrupted_training_resumes(stage, tmp_path):
    import demo

    from mmceformer.datasets import make_toy_cls, make_toy_coco
    data_root = str(tmp_path / 'toy')
    if stage == 'pretrain':
        make_toy_cls(data_root, num_train=4, num_val=2, seed=2)
        config = demo.CLS_CONFIG
        options = demo.cls_data_options(data_root) + [
            'train_dataloader.batch_size=4'
        ]
    else:
        make_toy_coco(data_root, num_train=4, num_val=2, seed=2)
        config = demo.CONFIG
        options = demo.data_options(data_root) + [
            'model.backbone.init_cfg=None'
        ]
    work_dir = tmp_path / 'work'
    options += [
        'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
        'train_cfg.val_interval=100'
    ]
    command = [
        sys.executable,
        str(ROOT / 'tools' / 'train.py'), config, '--work-dir',
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
