"""tools/train.py and tools/test.py end to end on a tiny toy COCO set, the
resume path, and a 2-process CPU run of tools/dist_train.sh."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmceformer.datasets import make_toy_coco

pytestmark = pytest.mark.mmcv_ops  # Mask R-CNN needs RoIAlign, nms

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / 'configs' / 'toy' / 'mask_rcnn_ceformer_toy.py')
sys.path.insert(0, str(ROOT / 'tools'))


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('toy_coco')
    make_toy_coco(str(root), num_train=4, num_val=2, seed=1)
    return str(root) + '/'


def data_options(root, max_epochs=1):
    return [
        f'train_dataloader.dataset.data_root={root}',
        f'val_dataloader.dataset.data_root={root}',
        f'test_dataloader.dataset.data_root={root}',
        f'val_evaluator.ann_file={root}annotations/instances_val.json',
        f'test_evaluator.ann_file={root}annotations/instances_val.json',
        'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
        'test_dataloader.num_workers=0', f'train_cfg.max_epochs={max_epochs}',
        f'train_cfg.val_interval={max_epochs}',
        'model.backbone.init_cfg=None'  # from scratch: no stage-1 checkpoint
    ]


def test_train_then_test_prints_coco_map(toy_root, tmp_path, capsys):
    import test as test_tool

    import train as train_tool
    work_dir = tmp_path / 'work'
    runner = train_tool.main([
        CONFIG, '--work-dir',
        str(work_dir), '--cfg-options', *data_options(toy_root)
    ])
    assert runner.iter == 1  # 4 images, batch 4, one epoch
    checkpoint = work_dir / 'epoch_1.pth'
    assert checkpoint.exists()
    metrics = test_tool.main([
        CONFIG,
        str(checkpoint), '--work-dir',
        str(tmp_path / 'test'), '--out',
        str(tmp_path / 'preds.pkl'), '--cfg-options', *data_options(toy_root)
    ])
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP'):
        assert key in metrics and 0.0 <= metrics[key] <= 1.0
    printed = capsys.readouterr().out
    assert 'coco/bbox_mAP:' in printed and 'coco/segm_mAP:' in printed
    assert (tmp_path / 'preds.pkl').stat().st_size > 0

    # --resume continues from the last checkpoint instead of starting over.
    resumed = train_tool.main([
        CONFIG, '--work-dir',
        str(work_dir), '--resume', '--cfg-options',
        *data_options(toy_root, max_epochs=2)
    ])
    assert resumed.iter == 2 and resumed.epoch == 2
    assert torch.load(work_dir / 'epoch_2.pth')['meta']['iter'] == 2


def test_train_amp_and_local_rank_flags_parse():
    import train as train_tool
    args = train_tool.parse_args([CONFIG, '--amp', '--local-rank', '0'])
    cfg = train_tool.build_config(args)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    args = train_tool.parse_args([CONFIG, '--local_rank', '1'])
    assert args.local_rank == 1


def test_dist_train_two_cpu_processes(toy_root, tmp_path):
    env = dict(
        os.environ, PYTHON=sys.executable, PORT='29517', OMP_NUM_THREADS='1')
    work_dir = tmp_path / 'dist'

    def launch():
        return subprocess.run([
            'bash',
            str(ROOT / 'tools' / 'dist_train.sh'), CONFIG, '2', '--work-dir',
            str(work_dir), '--cfg-options', *data_options(toy_root),
            'train_dataloader.batch_size=2'
        ],
                              env=env,
                              capture_output=True,
                              text=True,
                              timeout=600)

    result = launch()
    # Known flake, open: about 1 run in 8 (measured on this commit and the
    # one before it) rank 0 aborts with "terminate called without an active
    # exception" in the 2-process gloo run. One new launch is allowed for
    # that abort only; any other failure fails at once.
    if result.returncode and 'terminate called without an active' \
            in result.stderr:
        result = launch()
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = torch.load(work_dir / 'epoch_1.pth')
    # 4 images over 2 processes with 2 images each: one iteration.
    assert checkpoint['meta']['iter'] == 1
    log = result.stdout + result.stderr
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
