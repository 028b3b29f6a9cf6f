"""mmceformer.utils.roofline and tools/analysis/roofline.py: bytes and MACs
of known ops, bounds and ratios computed from the measurements printed."""
import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mmceformer.utils import roofline
from mmceformer.utils.complexity import count_macs

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tools' / 'analysis'))

PEAKS = dict(bandwidth=1e10, macs_per_s=1e11)


def records_of(fn):
    return roofline.op_records(fn, repeats=2, warmup=0)


def test_bytes_of_copies_views_fills_and_row_ops():
    x = torch.randn(64, 32)
    index = torch.randint(0, 64, (16, ))
    buffer = torch.zeros(64, 32)
    src = torch.randn(16, 32)

    def fn():
        x.clone()  # read + write
        x.t()  # a view moves nothing
        torch.zeros(64, 32)  # written only
        x.index_select(0, index)  # reads what it writes, plus the index
        buffer.index_copy_(0, index, src)  # source rows read and written

    ops = {r['op']: r for r in records_of(fn)}
    size = x.numel() * 4
    assert ops['clone']['bytes'] == 2 * size
    assert ops['t']['bytes'] == 0
    assert ops['zeros']['bytes'] == size
    assert ops['index_select']['bytes'] == 2 * src.numel() * 4 + 16 * 8
    assert ops['index_copy_']['bytes'] == 2 * src.numel() * 4 + 16 * 8
    assert all(r['macs'] == 0 for r in ops.values())


def test_macs_agree_with_the_flop_counter_of_get_flops():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8),
        nn.ConvTranspose2d(8, 4, 2, stride=2), nn.Flatten(2))
    x = torch.randn(2, 3, 12, 10)

    def fn():
        y = model(x)  # (2, 4, 480)
        torch.nn.functional.linear(y, torch.randn(7, 480))
        torch.bmm(y, y.transpose(1, 2))
        q = torch.randn(2, 3, 5, 4)
        torch.nn.functional.scaled_dot_product_attention(q, q, q)

    # torch's counter with the CPU attention op added, as get_flops counts
    macs = sum(r['macs'] for r in records_of(fn))
    assert macs == count_macs(fn) > 0


def test_bounds_and_ratios_come_from_the_records():
    records = [
        dict(op='a', seconds=2e-3, bytes=10**7, macs=0),  # 1 ms at 10 GB/s
        dict(op='a', seconds=1e-3, bytes=0, macs=10**8),  # 1 ms of GEMM
        dict(op='b', seconds=1e-3, bytes=0, macs=0),  # a view
    ]
    rows = roofline.by_op(records, PEAKS)
    assert [r['op'] for r in rows] == ['a', 'b']
    a, b = rows
    assert a['calls'] == 2 and a['seconds'] == pytest.approx(3e-3)
    assert a['bound'] == pytest.approx(2e-3)
    assert a['ratio'] == pytest.approx(1.5)
    assert a['share'] == pytest.approx(0.75)
    assert b['ratio'] == float('inf')
    text = roofline.table(rows, top=1)
    assert '| a | 2 | 3.00 | 75.0% | 10.0 | 0.100 |' in text
    assert '| (other ops) | 1 |' in text and '| total | 3 | 4.00 |' in text


def test_machine_peaks_are_positive():
    peaks = roofline.machine_peaks(size_mb=4, gemm=128, repeats=2)
    assert peaks['bandwidth'] > 0 and peaks['macs_per_s'] > 0
    assert peaks['fault_s'] >= 0


def test_page_faults_are_summed_and_costed_at_the_machine_rate():
    records = [
        dict(op='a', seconds=2e-3, bytes=10**7, macs=0, faults=100),
        dict(op='a', seconds=1e-3, bytes=10**7, macs=0, faults=50),
        dict(op='b', seconds=1e-3, bytes=10**7, macs=0, faults=0),
    ]
    a, b = roofline.by_op(records, dict(PEAKS, fault_s=2e-6))
    assert a['faults'] == 150 and b['faults'] == 0
    assert a['fault_seconds'] == pytest.approx(3e-4)
    text = roofline.table([a, b], top=2)
    mb = 150 * roofline.PAGE_BYTES / 1e6
    assert f'| 1.5x | {mb:.1f} | 0.30 |' in text
    # without a measured fault cost the time column is 0, the count stays
    assert roofline.by_op(records, PEAKS)[0]['fault_seconds'] == 0


@pytest.mark.skipif(
    roofline.resource is None
    or any(k.startswith('MALLOC_') for k in os.environ),
    reason='fault counts need getrusage and glibc defaults')
def test_first_touch_of_a_large_new_tensor_is_counted():
    """64 MB is above glibc's largest mmap threshold: a new tensor of that
    size is mapped afresh and its first write faults; writing it again
    does not."""
    def fn():
        fresh = torch.empty(16 * 2**20)
        fresh.fill_(1.)
        fresh.fill_(2.)

    fills = [r for r in records_of(fn) if r['op'] == 'fill_']
    assert all(isinstance(r['faults'], int) for r in fills)
    assert fills[0]['faults'] > 0 and fills[1]['faults'] == 0


def test_a_forward_that_changes_its_ops_is_refused():
    calls = []

    def fn():
        calls.append(1)
        x = torch.ones(3)
        return x + 1 if len(calls) % 2 else x * 2

    with pytest.raises(RuntimeError, match='deterministic forward'):
        roofline.op_records(fn, repeats=2, warmup=0)
    with pytest.raises(ValueError, match='repeats must be >= 1'):
        roofline.op_records(fn, repeats=0)


def test_cli_profiles_a_backbone(capsys):
    """The real tool on the toy CEFormer (deploy form, two blocks): the
    ops in the table, ratios of the time and bound it reports."""
    import roofline as tool
    config = str(ROOT / 'configs' / 'toy' / 'cls_ceformer_toy.py')
    result = tool.main([
        config, '--shape', '64', '64', '--repeats', '1', '--deploy',
        '--cfg-options', 'model.backbone.arch.depth=2',
        'model.backbone.prune_layers=[1]'
    ])
    out = capsys.readouterr().out
    assert 'GB/s copy bandwidth' in out and '| addmm |' in out
    assert 'per minor page fault' in out and 'MB of new pages' in out
    rows = result['rows']
    assert all(r['bound'] >= 0 for r in rows)
    assert any(r['op'] == 'convolution' and r['macs'] > 0 for r in rows)
    for r in rows:
        if r['bound']:
            assert r['ratio'] == pytest.approx(r['seconds'] / r['bound'])


def test_cli_profiles_an_mmpretrain_vit_backbone(capsys):
    """EAttentionViT (whose train(), as mmpretrain's, returns None) through
    the same path: its Linear layers in the table."""
    import roofline as tool
    config = str(ROOT / 'configs' / 'toy' / 'cls_deit_toy.py')
    result = tool.main([
        config, '--shape', '64', '64', '--repeats', '1', '--cfg-options',
        'model.backbone.arch.num_layers=2', 'model.backbone.prune_layers=[1]'
    ])
    assert '| addmm |' in capsys.readouterr().out
    assert any(r['op'] == 'addmm' and r['macs'] > 0 for r in result['rows'])


def test_token_ops_benchmark_checks_equality_and_prints_ratios(capsys):
    import benchmark_token_ops
    benchmark_token_ops.main(
        ['--grid', '4', '6', '--channels', '8', '--repeats', '1'])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if '(earlier)' in line]
    assert len(rows) == 2 and all(r.endswith('| 1.00 |') for r in rows)
    assert out.count('(ours)') == 2
    assert out.count('| advanced indexing (previous) |') == 1
    assert out.count('| GridBuffer, ') == 2


def test_token_ops_benchmark_times_a_backbone_with_and_without_buffer(
        capsys):
    """The toy CEFormer (drop mode, two pruning blocks) with its
    GridBuffer against a new grid per block: outputs checked equal, one
    row each."""
    import benchmark_token_ops
    benchmark_token_ops.main([
        '--grid', '4', '6', '--channels', '8', '--repeats', '1',
        '--backbone', 'configs/toy/cls_ceformer_toy.py', '--shape', '64', '96'
    ])
    out = capsys.readouterr().out
    assert 'cls_ceformer_toy.py backbone, 64x96' in out
    baseline = [line for line in out.splitlines() if '(baseline)' in line]
    assert len(baseline) == 1 and baseline[0].endswith('| 1.00 |')
    assert '| GridBuffer: one grid per forward (ours) |' in out


def test_bytes_of_scatters_puts_and_copies_count_the_touched_elements():
    dest = torch.zeros(100, 8)
    index = torch.randint(0, 100, (5, 8))
    src = torch.randn(5, 8)
    rows = torch.tensor([3, 7])
    mask = torch.zeros(100, dtype=torch.bool)
    mask[:4] = True
    other = torch.randn(100, 8)

    def fn():
        dest.scatter_(0, index, src)  # 40 elements
        dest.scatter_add_(0, index, src)  # and read again
        dest.index_put_((rows, ), torch.ones(2, 8))  # 2 rows of 8
        dest[mask] = 0.  # 4 rows, a 0-dim value
        dest.copy_(other)

    calls = records_of(fn)
    ops = [(r['op'], r['bytes']) for r in calls]
    elems = 40 * 4
    assert ops[0] == ('scatter_', 40 * 8 + elems + elems)
    assert ops[1] == ('scatter_add_', 40 * 8 + elems + 2 * elems)
    assert ('index_put_', 2 * 8 + 2 * 8 * 4 + 2 * 8 * 4) in ops
    assert ('copy_', 2 * dest.nbytes) == ops[-1]
    masked = [b for op, b in ops if op == 'index_put_'][-1]
    assert masked == mask.nbytes + 4 + 4 * 8 * 4  # mask, value, 4 rows


def test_dwconv_benchmark_checks_formulations_and_prints_ratios(capsys):
    import benchmark_dwconv
    seconds = benchmark_dwconv.main([
        '--grid', '5', '7', '--channels', '8', '--repeats', '1', '--chunk',
        '3'
    ])  # chunks of 3, 3 and 2 channels: checked equal to the whole
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith('| ')]
    assert len(rows) == 1 + len(seconds) == 7  # header and six rows
    assert 'in chunks of 3 channels' in out
    assert rows[1].endswith('| 1.00 |') and 'as the model runs it' in rows[1]
    assert 'GMAC/s' in out


def test_pos_embed_benchmark_checks_equality_and_times_a_backbone(capsys):
    import benchmark_pos_embed
    config = str(ROOT / 'configs' / 'toy' / 'cls_deit_toy.py')
    result = benchmark_pos_embed.main([
        '--src', '4', '4', '--dst', '6', '9', '--channels', '8', '--repeats',
        '2', '--backbone', config, '--shape', '48', '80'
    ])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith('| ')]
    assert len(rows) == 1 + len(result['ops']) == 4
    assert rows[1].endswith('| 1.00 |')
    assert all(t > 0 for t in result['backbone'])
    assert 'EAttentionViT 1x3x48x80' in out


def test_cli_times_the_deployment_paths_against_the_same_bound(capsys):
    """--paths: eager and onnxruntime (compiled costs a compilation: the
    compile tests cover it) of the toy DeiT, each against the summed bound
    of the eager ops in the table."""
    import roofline as tool
    config = str(ROOT / 'configs' / 'toy' / 'cls_deit_toy.py')
    result = tool.main([
        config, '--shape', '64', '64', '--repeats', '1', '--paths', 'eager',
        'onnxruntime', '--cfg-options', 'model.backbone.arch.num_layers=2',
        'model.backbone.prune_layers=[1]'
    ])
    assert '| onnxruntime |' in capsys.readouterr().out
    bound = sum(r['bound'] for r in result['rows'])
    paths = {r['path']: r for r in result['paths']}
    assert set(paths) == {'eager', 'onnxruntime'}
    assert paths['eager']['vs_eager'] == 1.0
    for r in paths.values():
        assert r['seconds'] > 0
        assert r['ratio'] == pytest.approx(r['seconds'] / bound)
    assert paths['onnxruntime']['vs_eager'] == pytest.approx(
        paths['onnxruntime']['seconds'] / paths['eager']['seconds'])
    with pytest.raises(ValueError, match='--paths must be among'):
        tool.path_calls(None, None, ['tensorrt'], '.')


@pytest.mark.mmcv_ops  # mmdet's FPN
def test_pyramid_benchmark_checks_equality_and_prints_ratios(capsys):
    import benchmark_pyramid
    seconds = benchmark_pyramid.main(
        ['--grid', '4', '6', '--channels', '16', '--repeats', '1'])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith('| ')]
    assert len(rows) == 1 + 6 and set(seconds) == {'pyramid', 'FPN'}
    assert rows[1].endswith('| 1.00 |') and rows[4].endswith('| 1.00 |')
