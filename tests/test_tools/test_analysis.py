"""MAC counting, the benchmark tools and the tables script."""
import copy
import sys
from unittest import mock
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from mmceformer.utils.complexity import count_macs, measure

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tools'))
sys.path.insert(0, str(ROOT / 'tools' / 'analysis'))


def test_softmax_attention_is_counted():
    q = torch.randn(2, 3, 10, 8)
    v = torch.randn(2, 3, 10, 5)
    macs = count_macs(lambda: F.scaled_dot_product_attention(q, q, v))
    assert macs == 2 * 3 * 10 * 10 * (8 + 5)


def test_linear_attention_products_are_counted():
    from mmceformer.ops import linear_attention
    q = torch.randn(1, 2, 16, 4)
    macs = count_macs(lambda: linear_attention(q, q, q, pos_weight='1d'))
    # k~^T [v, 1] (P*D x N x Dv + 1: KV and z), q~ [KV, z] (N x P*D x
    # Dv + 1: numerator and denominator), per head
    dims = 2 * 4
    assert macs == 2 * (dims * 16 * (4 + 1) + 16 * dims * (4 + 1))


def config(name, shrink):
    cfg = Config.fromfile(str(ROOT / 'configs' / name))
    shrink(cfg)
    return cfg


def test_measure_counts_pruned_tokens(shrink_config):
    softmax = measure(
        config('cls_deit_s_softmax_in1k.py', shrink_config), (256, 256))
    eattn = measure(
        config('cls_deit_s_eattn_in1k.py', shrink_config), (256, 256))
    assert softmax['params'] == eattn['params']
    assert eattn['macs'] < softmax['macs']
    assert softmax['tokens'] == [256.0] * 4
    # blocks 0-2 see every token, block 3 samples R = round(0.7 * 256)
    assert eattn['tokens'][:3] == [256.0] * 3 and eattn['tokens'][3] <= 179


@pytest.mark.mmcv_ops  # builds Mask R-CNN
def test_measure_detector_reports_backbone_and_whole(shrink_config):
    result = measure(
        config('mask_rcnn_ceformer_s_coco.py', shrink_config), (128, 160))
    assert 0 < result['backbone_macs'] < result['macs']
    assert 0 < result['backbone_params'] < result['params']
    # the parts add up to the whole; backbone + neck is extract_feat's
    parts = result['parts']
    assert {'backbone', 'neck', 'rpn_head', 'roi_head', 'other'} <= set(parts)
    assert all(parts[p] > 0 for p in ('backbone', 'neck', 'rpn_head',
                                      'roi_head'))
    assert sum(v for k, v in parts.items() if k != 'total') == result['macs']
    assert parts['backbone'] + parts['neck'] == result['backbone_macs']


@pytest.mark.mmcv_ops  # builds Mask R-CNN
def test_get_flops_cli(capsys):
    import get_flops
    get_flops.main([
        str(ROOT / 'configs' / 'toy' / 'mask_rcnn_ceformer_toy.py'), '--shape',
        '128'
    ])
    out = capsys.readouterr().out
    assert 'backbone + neck:' in out and 'GMACs' in out
    with pytest.raises(ValueError, match='--shape'):
        get_flops.main(['x.py', '--shape', '1', '2', '3'])


def test_benchmark_compares_two_configs(shrink_config):
    import benchmark
    configs = [
        config('cls_deit_s_eattn_in1k.py', shrink_config),
        config('cls_deit_s_softmax_in1k.py', shrink_config)
    ]
    results = benchmark.benchmark(configs, shape=(64, 64), warmup=1, repeats=2)
    assert len(results) == 2
    for r in results.values():
        assert r['latency_ms'] > 0 and r['images_per_s'] > 0


@pytest.mark.mmcv_ops  # builds Mask R-CNN
def test_reproduce_tables_rows(shrink_config):
    import reproduce_tables
    text = reproduce_tables.build_tables(
        override=shrink_config, cls_shape=(64, 64), det_shape=(128, 128))
    for title in ('Table 3-4', 'Table 4-2', 'Table 4-3', 'Table 4-7'):
        assert title in text
    for row in ('| DeiT-B |', '| Swin-S |', '| CEFormer-S |', '| CEFormer-L |',
                '| w/o C4 |'):
        assert row in text
    assert '(17.5)' in text and '(201)' in text  # thesis figures beside
    # tiny models are far from the thesis: rows say so
    assert 'disagrees by' in text


def test_reproduce_tables_keeps_the_timed_tables(tmp_path, monkeypatch):
    import reproduce_tables
    monkeypatch.setattr(reproduce_tables, 'build_tables', lambda: 'new\n')
    out = tmp_path / 'tables.md'
    out.write_text('old\n' + reproduce_tables.TIMED_MARKER + '\ntimed\n')
    reproduce_tables.main(['--out', str(out)])
    assert out.read_text() == ('new\n\n' + reproduce_tables.TIMED_MARKER +
                               '\ntimed\n')


def test_plot_scaling_writes_png(tmp_path):
    import plot_scaling
    rows = plot_scaling.measure_scaling([64, 128], repeats=1)
    assert [r['size'] for r in rows] == [64, 128]
    for row in rows:
        for name in plot_scaling.MODELS:
            assert row[name]['gmacs'] > 0 and row[name]['ms'] > 0
    # MACs grow with the input
    name = 'DeiT-S softmax'
    assert rows[1][name]['gmacs'] > rows[0][name]['gmacs']
    out = plot_scaling.plot(rows, str(tmp_path / 'scaling.png'))
    assert Path(out).stat().st_size > 1000


def test_compare_modes_ratios():
    import compare_modes
    configs = [
        str(ROOT / 'configs' / f'cls_deit_s_{m}_in1k.py')
        for m in ('softmax', 'eattn')
    ]
    rows = compare_modes.compare(
        configs, [(64, 96)], repeats=1, prune_mode='skip')
    assert [r['config'] for r in rows] == [Path(c).name for c in configs]
    table = compare_modes.format_rows(rows, 2)
    assert '| cls_deit_s_eattn_in1k.py | 64x96 |' in table
    assert '| 1.00 |' in table  # the first config against itself


@pytest.mark.mmcv_ops  # Mask R-CNN steps
def test_gpu_check_smoke_run_on_cpu(capsys):
    """tools/gpu_check.py's quick CPU run: every check passes (the GPU run
    is the same script with full sizes)."""
    import gpu_check
    assert gpu_check.main(['--device', 'cpu', '--quick']) == 0
    printed = capsys.readouterr().out
    assert '[FAIL]' not in printed and 'all checks passed' in printed
    # every backbone variant took its AMP training step
    assert printed.count('EAttentionSwin eattn attn_scope=stage') == 1


@pytest.mark.mmcv_ops  # trains Mask R-CNN
def test_benchmark_train_step_trains_both_models(tmp_path):
    import benchmark_train_step
    from mmceformer.datasets import make_toy_coco
    make_toy_coco(str(tmp_path), num_train=2, num_val=1, seed=3)
    cfg = Config.fromfile(
        str(ROOT / 'configs' / 'toy' / 'mask_rcnn_ceformer_toy.py'))
    cfg.train_dataloader.batch_size = 2
    cfg.train_dataloader.dataset.data_root = str(tmp_path) + '/'
    own = cfg.model.roi_head.bbox_roi_extractor.roi_layer.sampling_ratio
    sampling = 'model.roi_head.bbox_roi_extractor.roi_layer.sampling_ratio'
    results, steps = benchmark_train_step.benchmark_train_step(
        cfg, {sampling: own + 2}, warmup=0, steps=2)
    assert set(results) == {'config', 'variant'}
    assert all(s > 0 for s in results.values())
    # the variant's options reach its model only, and leave cfg as it was
    layers = [s.model.roi_head.bbox_roi_extractor.roi_layers[0]
              for s in steps]
    assert [layer.sampling_ratio for layer in layers] == [own, own + 2]
    assert cfg.model.roi_head.bbox_roi_extractor.roi_layer.sampling_ratio \
        == own
    # the steps train: one more step moves the weights
    weight = steps[1].model.roi_head.bbox_head.fc_cls.weight
    before = weight.detach().clone()
    losses = steps[1]()
    assert 'loss_cls' in losses and not torch.equal(before, weight)
    with pytest.raises(ValueError, match='--steps'):
        benchmark_train_step.main(['x.py', '--steps', '0'])


def test_token_budget_matches_train_and_eval_counts(shrink_config, capsys):
    from token_budget import budget, main
    cfg = config('cls_deit_s_eattn_in1k.py', shrink_config)
    result = budget(cfg, shape=(64, 64), batch=4, repeats=3)
    assert result['blocks'] == [3]  # the tiny ViT has 4 blocks
    assert set(result['train']) == {'systematic', 'independent'}
    ev = result['eval'][0]
    assert 0 < ev <= 11  # R = round(0.7 * 16)
    assert abs(result['train']['systematic'][0] / ev - 1) < 0.15
    assert result['train']['independent'][0] < result['train'][
        'systematic'][0]
    with pytest.raises(ValueError, match='does not sample'):
        budget(config('cls_deit_s_softmax_in1k.py', shrink_config),
               shape=(64, 64))
    with pytest.raises(SystemExit):
        main([str(ROOT / 'configs' / 'cls_deit_s_eattn_in1k.py'),
              '--repeats', '0'])


def test_score_memory_every_score_keeps_what_cls_keeps():
    """No score holds an autograd graph: 'all' (O(N^2) similarities in
    softmax mode before) and 'random' save what 'cls' saves."""
    from score_memory import measure as saved
    result = saved(tokens=300, dims=32, heads=2, batch=1)
    for mode in ('prune', 'eattn'):
        base = result[mode, 'cls']
        assert base > 0
        for score in ('cls_v', 'all', 'random'):
            assert result[mode, score] <= base * 1.01, (mode, score, result)


@pytest.mark.mmcv_ops  # builds Mask R-CNN and Deformable DETR
def test_benchmark_detector_times_the_test_pipeline_and_parts(
        shrink_config, capsys):
    """Tiny detectors through their own test pipelines (the resize scaled
    down to keep the test short): a positive FPS each, ratios against the
    first, the parts of each detector timed and within its total (the
    pyramid inside the backbone's time)."""
    from benchmark_detector import (NESTED, benchmark, build_detector,
                                    synthetic_image, table)
    names = [
        'mask_rcnn_ceformer_s_coco.py', 'deformable_detr_deit_s_eattn_coco.py'
    ]
    configs = []
    for name in names:
        cfg = config(name, shrink_config)
        for step in cfg.test_dataloader.dataset.pipeline:
            if step['type'] == 'Resize':
                step['scale'] = (160, 96)
        configs.append(cfg)
    image = synthetic_image(200, 120)
    results = benchmark(configs, image, repeats=2, warmup=1)
    assert results[0]['ratio'] == 1.0
    for result in results:
        assert result['fps'] > 0 and result['seconds'] > 0
        assert isinstance(result['detections'], int)
        assert 0 <= result['detections'] <= 100  # max_per_img of both
        parts = result['parts']
        assert parts['backbone'] > 0
        assert 0 < parts['pyramid'] < parts['backbone']
        # medians of each part: they add up to about the median total
        assert sum(t for p, t in parts.items() if p not in NESTED) == \
            pytest.approx(result['seconds'], rel=0.25)
    assert results[1]['ratio'] == pytest.approx(
        results[1]['fps'] / results[0]['fps'])
    assert {'rpn_head', 'roi_head'} <= set(results[0]['parts'])
    assert {'encoder', 'decoder'} <= set(results[1]['parts'])
    assert 'encoder' in table(names, results)
    assert '| ratio | detections |' in table(names, results)
    assert f"| {results[1]['detections']} |" in table(names, results)
    with pytest.raises(ValueError, match='checkpoints'):
        benchmark(configs, image, checkpoints=[None], repeats=1)
    # --deploy: CEFormer in its switch_to_deploy() form (mmdet's builders
    # change the config they are given: a copy each)
    assert build_detector(copy.deepcopy(configs[0]), None, 'cpu', False,
                          deploy=True).backbone.deploy
    assert not build_detector(copy.deepcopy(configs[0]), None, 'cpu',
                              False).backbone.deploy
    # --compile: the backbone's forward compiled (dynamo's eager backend
    # here, for time), the same detections; the pyramid, inside its graph,
    # is not timed apart
    from benchmark_detector import test_inputs
    data = test_inputs(configs[0], image)
    torch.manual_seed(0)
    eager = build_detector(copy.deepcopy(configs[0]), None, 'cpu', False)
    torch.manual_seed(0)
    compiled = build_detector(
        copy.deepcopy(configs[0]), None, 'cpu', False,
        compile_backend='eager')
    assert hasattr(compiled.backbone.forward, '_torchdynamo_orig_callable')
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():  # the maps themselves (random heads may find 0)
        for got, want in zip(compiled.backbone(x), eager.backbone(x)):
            torch.testing.assert_close(got, want)
        got = compiled.test_step(data)[0].pred_instances.bboxes
        want = eager.test_step(data)[0].pred_instances.bboxes
    torch.testing.assert_close(got, want)
    built = []
    with mock.patch('benchmark_detector.build_detector',
                    lambda *a: built.append(build_detector(*a)) or built[-1]):
        [result] = benchmark([copy.deepcopy(configs[0])],
                             image,
                             repeats=1,
                             warmup=1,
                             compile_backend='eager')
    assert hasattr(built[0].backbone.forward, '_torchdynamo_orig_callable')
    assert 'pyramid' not in result['parts'] and result['parts']['backbone'] > 0
    with pytest.raises(ValueError, match='warmup >= 1'):
        benchmark(configs[:1], image, warmup=0, compile_backend='eager')
