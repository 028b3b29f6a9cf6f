"""tools/analysis/train_modes.py: the per-mode fine-tuning sweep (commands,
the metric curves it reads back, the summary and its table, the timing of
the modes through the real test pipeline)."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tools' / 'analysis'))
import train_modes  # noqa: E402

DDETR_TOY = ROOT / 'configs' / 'toy' / 'deformable_detr_deit_toy.py'


def test_train_command_sets_mode_seed_and_the_shared_checkpoint():
    command = train_modes.train_command(
        'cfg.py', 'stage1.pth', 'prune', 3, 'work/prune_seed3',
        ['train_cfg.max_epochs=1'])
    assert command[1].endswith('tools/train.py') and command[2] == 'cfg.py'
    assert command[command.index('--work-dir') + 1] == 'work/prune_seed3'
    assert '--resume' in command
    options = command[command.index('--cfg-options') + 1:]
    assert options == [
        'model.backbone.attn_mode=prune', 'randomness.seed=3',
        'model.backbone.init_cfg.checkpoint=stage1.pth',
        'train_cfg.max_epochs=1'
    ]
    # without --checkpoint the config's own init_cfg stays
    assert not any('init_cfg' in o for o in train_modes.train_command(
        'cfg.py', None, 'eattn', 0, 'w'))


def write_scalars(run_dir, stamp, records):
    path = run_dir / stamp / 'vis_data' / 'scalars.json'
    path.parent.mkdir(parents=True)
    path.write_text('\n'.join(json.dumps(r) for r in records) + '\n')


def test_read_curve_joins_the_starts_of_a_resumed_run(tmp_path):
    metric = 'coco/bbox_mAP'
    write_scalars(tmp_path, '20261202_070000', [
        dict(loss=3.0, step=10), {metric: 0.1, 'step': 4},
        {metric: 0.2, 'step': 8}
    ])
    # resumed from epoch 8: later values win for the same epoch
    write_scalars(tmp_path, '20261202_080000', [{
        metric: 0.25,
        'step': 8
    }, {
        metric: 0.4,
        'step': 12
    }])
    assert train_modes.read_curve(str(tmp_path), metric) == [{
        'epoch': 4,
        metric: 0.1
    }, {
        'epoch': 8,
        metric: 0.25
    }, {
        'epoch': 12,
        metric: 0.4
    }]
    assert train_modes.read_curve(str(tmp_path / 'none'), metric) == []


def test_summary_means_deltas_and_missing_runs():
    metric = 'm'
    curves = {
        'softmax_seed0': [{'epoch': 1, metric: 0.1}, {'epoch': 2, metric: 0.3}],
        'softmax_seed1': [{'epoch': 2, metric: 0.5}],
        'eattn_seed0': [{'epoch': 2, metric: 0.2}],
        'eattn_seed1': [],  # did not reach a validation
    }
    rows = train_modes.summarize(['softmax', 'eattn'], [0, 1], curves, metric)
    assert rows[0]['finals'] == [0.3, 0.5]
    assert rows[0]['mean'] == pytest.approx(0.4)
    assert rows[0]['delta'] == 0
    assert rows[1]['finals'] == [0.2, None]
    assert rows[1]['mean'] == pytest.approx(0.2)
    assert rows[1]['delta'] == pytest.approx(-0.2)
    text = train_modes.table(rows, [0, 1], metric)
    assert '| eattn | 0.200 | - | 0.200 | -0.200 |' in text


def test_run_trainings_runs_every_command_and_reports_a_failure(tmp_path):
    ok = [
        sys.executable, '-c',
        'import os, sys; open(sys.argv[-1] + ".done", "w").write('
        'os.environ["OMP_NUM_THREADS"])', '--work-dir'
    ]
    commands = [ok + [str(tmp_path / f'run{i}')] for i in range(3)]
    train_modes.run_trainings(commands, jobs=2, threads=2)
    for i in range(3):
        assert (tmp_path / f'run{i}.done').read_text() == '1'
    bad = [sys.executable, '-c', 'raise SystemExit(3)', '--work-dir',
           str(tmp_path / 'bad')]
    with pytest.raises(RuntimeError, match='training failed'):
        train_modes.run_trainings([bad], jobs=1, threads=2)
    with pytest.raises(ValueError, match='jobs must be >= 1'):
        train_modes.run_trainings([], jobs=0, threads=2)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match='--modes must be among'):
        train_modes.main([str(DDETR_TOY), '--modes', 'softmax', 'fast'])


@pytest.mark.mmcv_ops  # builds Deformable DETR
def test_time_modes_runs_each_mode_through_the_test_pipeline(tmp_path):
    from mmceformer.datasets import make_toy_coco
    make_toy_coco(str(tmp_path), num_train=1, num_val=1, image_size=(96, 128))
    options = [
        f'val_dataloader.dataset.data_root={tmp_path}/',
        'model.encoder.num_layers=1', 'model.decoder.num_layers=1'
    ]
    results = train_modes.time_modes(
        str(DDETR_TOY), ['softmax', 'eattn'], [None, None],
        repeats=1,
        cfg_options=options)
    assert len(results) == 2
    assert all(r['fps'] > 0 for r in results)
    assert results[0]['ratio'] == 1.0
    assert results[1]['ratio'] == pytest.approx(results[1]['fps'] /
                                                results[0]['fps'])
    assert {'backbone', 'encoder', 'decoder'} <= set(results[1]['parts'])


def test_options_that_the_sweep_sets_are_refused():
    with pytest.raises(ValueError, match='must not set'):
        train_modes.main([
            str(DDETR_TOY), '--cfg-options', 'model.backbone.attn_mode=linear'
        ])


def test_a_failing_run_stops_the_others(tmp_path):
    slow = [
        sys.executable, '-c', 'import time; time.sleep(30)', '--work-dir',
        str(tmp_path / 'slow')
    ]
    bad = [sys.executable, '-c', 'raise SystemExit(3)', '--work-dir',
           str(tmp_path / 'bad')]
    import time
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r'training failed \(3\)'):
        train_modes.run_trainings([slow, bad], jobs=2, threads=2)
    assert time.perf_counter() - start < 20  # slow was stopped, not awaited
