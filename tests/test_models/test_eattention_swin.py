"""EAttentionSwin: mmpretrain's Swin with E-Attention in the windows."""
import pytest
import torch
from helpers import images, in_mode, probe_loss
from mmpretrain.models.backbones import SwinTransformer

from mmceformer.models import EAttentionSwin

# 4 stages, window 4: a 64x64 input gives 16x16, 8x8, 4x4, 2x2 token maps.
TINY = dict(embed_dims=16, depths=[1, 2, 2, 1], num_heads=[1, 2, 2, 2])
MODES = ('softmax', 'linear', 'prune', 'eattn')


def tiny(**kwargs):
    torch.manual_seed(0)
    kwargs.setdefault('arch', TINY)
    kwargs.setdefault('img_size', 64)
    kwargs.setdefault('window_size', 4)
    kwargs.setdefault('out_indices', (0, 1, 2, 3))
    kwargs.setdefault('pad_small_map', True)
    return EAttentionSwin(**kwargs)


@pytest.mark.parametrize('arch', ['tiny', 'small'])
def test_state_dict_keys_are_mmpretrain_and_load_strictly(arch):
    ours = EAttentionSwin(arch=arch, attn_mode='eattn')
    theirs = SwinTransformer(arch=arch)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)


@pytest.mark.parametrize('size', [(64, 64), (72, 88)])
def test_softmax_equals_mmpretrain(size):
    """Shifted windows, padding of maps not divisible by the window."""
    kwargs = dict(
        arch=TINY,
        img_size=64,
        window_size=4,
        out_indices=(0, 1, 2, 3),
        pad_small_map=True)
    theirs = in_mode(SwinTransformer(**kwargs), training=False)
    ours = in_mode(tiny(), training=False)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = images(size=size)
    for a, b in zip(ours(x), theirs(x)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('mode', MODES)
def test_every_mode_forward_backward_dense_maps(mode):
    model = in_mode(tiny(attn_mode=mode), training=True)
    outs = model(images(size=(64, 96)))
    assert [o.shape for o in outs] == [(2, 16, 16, 24), (2, 32, 8, 12),
                                       (2, 64, 4, 6), (2, 128, 2, 3)]
    probe_loss(outs).backward()
    last = model.stages[-1].blocks[-1].attn.w_msa.qkv.weight
    for param in (model.patch_embed.projection.weight, last):
        assert param.grad is not None and param.grad.abs().max() > 1e-6


@pytest.mark.parametrize('mode', ['prune', 'eattn'])
def test_pruning_skips_tokens_in_late_stages_only(mode, monkeypatch):
    model = in_mode(tiny(attn_mode=mode, keep_ratio=0.5), training=False)
    from mmceformer.models.backbones.eattention_swin import WindowEAttention
    sampled = []  # kept tokens that the windows report, per pruning block
    forward_windows = WindowEAttention.forward_windows

    def recording(self, x, mask=None, sample_mask=None):
        out = forward_windows(self, x, mask, sample_mask)
        if out.mask is not None:
            sampled.append(int(out.mask.sum()))
        return out

    monkeypatch.setattr(WindowEAttention, 'forward_windows', recording)
    # stage 3: an 8x8 map, 4 windows of 16 tokens (no padding) that keep
    # different numbers of tokens
    model(images(size=(128, 128)))
    # the kept map holds exactly the sampled tokens of every window
    assert sampled[:2] == [int(c.sum()) for c in model.token_counts[3:5]]
    model(images())
    counts = torch.stack(model.token_counts)  # (blocks, B)
    assert model.prune_layers == [3, 4, 5]  # stages 3 and 4
    assert (counts[:3] == torch.tensor([[256], [64], [64]])).all()
    # stage 3: 4x4 map = one 4x4 window, R = 8 draws
    assert (counts[3:5] <= 8).all() and (counts[3:5] >= 1).all()


@pytest.mark.parametrize('mode', ['prune', 'eattn'])
def test_eval_deterministic_and_batch_independent(mode):
    model = in_mode(tiny(attn_mode=mode, keep_ratio=0.5), training=False)
    x = images(batch=3)
    first = model(x)
    alone = model(x[1:2])
    for a, b in zip(first, alone):
        torch.testing.assert_close(a[1:2], b, atol=1e-5, rtol=1e-5)


def test_linear_mode_honours_the_shift_mask():
    """A token in a shifted window only mixes with its own region: changing
    a token of another region of the same window changes nothing there."""
    from mmpretrain.models.utils import ShiftWindowMSA

    from mmceformer.models.backbones.eattention_swin import WindowEAttention
    msa = ShiftWindowMSA(
        embed_dims=8,
        num_heads=2,
        window_size=4,
        shift_size=2,
        window_msa=WindowEAttention,
        attn_mode='linear')
    x = torch.randn(1, 64, 8)
    out = msa(x, (8, 8))
    # After the shift, the last window (rows 6-9 -> rows 6,7,0,1 of the
    # image, same for columns) holds 4 regions; token (7, 7) and (0, 0) are
    # in different regions of it.
    changed = x.clone()
    changed[0, 0] += 10.0
    out2 = msa(changed, (8, 8))
    torch.testing.assert_close(out[0, 7 * 8 + 7], out2[0, 7 * 8 + 7])
    assert not torch.allclose(out[0, 0], out2[0, 0])


def test_bad_arguments():
    with pytest.raises(ValueError, match='prune_mode'):
        tiny(prune_mode='drop')
    with pytest.raises(ValueError, match='attn_mode'):
        tiny(attn_mode='window')
    with pytest.raises(ValueError, match='prune_layers'):
        tiny(prune_layers=[6])


def test_kept_map_ignores_padding_entries():
    """A window keeping fewer tokens pads its index with 0; the padding must
    not unset a kept token 0."""
    import types

    from mmpretrain.models.utils import ShiftWindowMSA

    from mmceformer.models.layers import EAttentionOutput

    class Kept:

        def forward_windows(self, windows, mask=None, sample_mask=None):
            # window 0 keeps tokens 0 and 1; window 1 keeps token 0 only
            index = torch.tensor([[0, 1], [0, 0]])
            valid = torch.tensor([[True, True], [True, False]])
            return EAttentionOutput(torch.ones(2, 2, 3), index, valid)

    shift_msa = types.SimpleNamespace(
        window_size=2,
        shift_size=0,
        pad_small_map=False,
        w_msa=Kept(),
        get_attn_mask=ShiftWindowMSA.get_attn_mask,
        window_partition=ShiftWindowMSA.window_partition,
        window_reverse=ShiftWindowMSA.window_reverse)
    out, index, valid = EAttentionSwin._window_attention(
        shift_msa, torch.zeros(1, 8, 3), (2, 4))
    # 2x4 map, windows = columns 0-1 and 2-3; raster index of kept tokens
    kept = index[0][valid[0]].tolist()
    assert kept == [0, 1, 2]
    keep = torch.zeros(8, dtype=torch.bool)
    keep[kept] = True
    assert out[0, keep].eq(1).all() and out[0, ~keep].eq(0).all()


@pytest.mark.parametrize('shift', [0, 2])
def test_kept_slots_map_to_image_positions_through_shift_and_padding(shift):
    """Each window keeps its first cell; the positions returned must be
    the image positions of those cells after mmpretrain's padding, cyclic
    shift and partition (features carry position + 1; padding is 0)."""
    import types

    from mmpretrain.models.utils import ShiftWindowMSA

    from mmceformer.models.layers import EAttentionOutput

    class FirstCell:

        def forward_windows(self, windows, mask=None, sample_mask=None):
            index = torch.zeros(windows.shape[0], 1, dtype=torch.long)
            valid = torch.ones(windows.shape[0], 1, dtype=torch.bool)
            return EAttentionOutput(windows[:, :1], index, valid)

    shift_msa = types.SimpleNamespace(
        window_size=4,
        shift_size=shift,
        pad_small_map=True,
        w_msa=FirstCell(),
        get_attn_mask=ShiftWindowMSA.get_attn_mask,
        window_partition=ShiftWindowMSA.window_partition,
        window_reverse=ShiftWindowMSA.window_reverse)
    height, width = 6, 10  # padded to 8 x 12
    x = (torch.arange(height * width) + 1.).view(1, -1, 1).repeat(2, 1, 3)
    out, index, valid = EAttentionSwin._window_attention(
        shift_msa, x, (height, width))
    for b in range(2):
        kept = index[b][valid[b]]
        # what the windows' first cells held: position + 1, or 0 (padding)
        first_cells = ShiftWindowMSA.window_partition(
            torch.roll(
                torch.nn.functional.pad(
                    x[b:b + 1].view(1, height, width, 3),
                    (0, 0, 0, 2, 0, 2)),
                shifts=(-shift, -shift),
                dims=(1, 2)), 4)[:, 0, 0, 0]
        expected = sorted(int(v) - 1 for v in first_cells if v > 0)
        assert sorted(kept.tolist()) == expected
        # the kept tokens' outputs are their own features, others 0
        torch.testing.assert_close(out[b, kept, 0], kept.float() + 1)


# attn_scope='stage': every block attends over its stage's whole map.
ONE_STAGE = dict(embed_dims=16, depths=[2], num_heads=[2])


@pytest.mark.parametrize('pos_weight', ['1d', '2d', None])
@pytest.mark.parametrize('mode', ['linear', 'eattn'])
def test_stage_scope_equals_window_scope_on_a_one_window_map(
        mode, pos_weight):
    """An 8x8 map in one 8x8 window (no shift: mmpretrain drops it when the
    window is the map): both scopes see the same tokens and positions, so
    they must agree exactly, sampled tokens included."""
    kwargs = dict(
        arch=ONE_STAGE,
        img_size=32,
        window_size=8,
        pad_small_map=False,  # mmpretrain: no shift then
        out_indices=(0, ),
        attn_mode=mode,
        pos_weight=pos_weight,
        prune_layers=[1],
        keep_ratio=0.5)
    window = in_mode(tiny(**kwargs), training=False)
    stage = in_mode(tiny(attn_scope='stage', **kwargs), training=False)
    stage.load_state_dict(window.state_dict(), strict=True)
    x = images(size=(32, 32))
    torch.testing.assert_close(
        stage(x)[0], window(x)[0], atol=1e-5, rtol=1e-5)
    counts = torch.stack(stage.token_counts)
    torch.testing.assert_close(counts, torch.stack(window.token_counts))
    if mode == 'eattn':
        assert (counts[1] < 64).all()  # the second block sampled


@pytest.mark.parametrize('pos_weight', ['1d', '2d'])
def test_stage_scope_block_equals_reference_over_the_whole_map(pos_weight):
    """A 16x24 map (24 windows of 4x4): the block's attention is the O(N^2)
    reference over all 384 tokens, positions = raster index in the map."""
    from mmceformer.ops.linear_attention import linear_attention_reference
    model = in_mode(
        tiny(
            arch=dict(ONE_STAGE, depths=[1]),
            out_indices=(0, ),
            attn_mode='linear',
            attn_scope='stage',
            pos_weight=pos_weight), training=False)
    x = images(size=(64, 96))
    tokens, hw_shape = model.patch_embed(x)  # (2, 384, 16), (16, 24)
    block = model.stages[0].blocks[0]
    attn = block.attn.w_msa
    batch, num, channels = tokens.shape
    normed = block.norm1(tokens)
    # (B, N, 3C) -> (3, B, H, N, C/H)
    q, k, v = attn.qkv(normed).reshape(batch, num, 3, 2, 8).permute(
        2, 0, 3, 1, 4)
    out = linear_attention_reference(
        q, k, v, pos_weight=pos_weight, grid_size=hw_shape)
    out = attn.proj(out.transpose(1, 2).reshape(batch, num, channels))
    expected = tokens + out
    expected = block.ffn(block.norm2(expected), identity=expected)
    expected = model.norm0(expected).view(batch, *hw_shape, -1)
    got = model(x)[0].permute(0, 2, 3, 1)  # (B, H, W, C)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # the windowed model (same weights) mixes only within windows
    windowed = in_mode(
        tiny(
            arch=dict(ONE_STAGE, depths=[1]),
            out_indices=(0, ),
            attn_mode='linear',
            pos_weight=pos_weight), training=False)
    windowed.load_state_dict(model.state_dict())
    assert not torch.allclose(windowed(x)[0], model(x)[0], atol=1e-3)


@pytest.mark.parametrize('mode', ['linear', 'eattn'])
def test_stage_scope_every_stage_forward_backward(mode):
    """Any map size works (no windows to fit), pruning blocks sample
    keep_ratio of the map, with_cp gives the same gradients."""
    grads = []
    for with_cp in (False, True):
        model = in_mode(
            tiny(attn_mode=mode, attn_scope='stage', keep_ratio=0.5,
                 with_cp=with_cp), training=True)
        torch.manual_seed(1)
        # PatchMerging pads odd maps: 9x13, 5x7, 3x4, 2x2 tokens
        outs = model(images(size=(36, 52)))
        assert [o.shape[-2:] for o in outs] == [(9, 13), (5, 7), (3, 4),
                                                (2, 2)]
        counts = torch.stack(model.token_counts)  # (blocks, B)
        if mode == 'eattn':
            # stage 3: 3x4 map, R = 0.5 * 12 = 6 draws
            assert (counts[3:5] <= 6).all() and (counts[3:5] >= 1).all()
            assert (counts[5] <= 2).all()  # stage 4: 2x2 map, 2 draws
        else:
            assert counts.tolist() == [[117] * 2, [35] * 2, [35] * 2,
                                       [12] * 2, [12] * 2, [4] * 2]
        probe_loss(outs).backward()
        grads.append(model.patch_embed.projection.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_stage_scope_bad_arguments():
    with pytest.raises(ValueError, match='attn_scope'):
        tiny(attn_scope='global')
    for mode in ('softmax', 'prune'):
        with pytest.raises(ValueError, match="attn_scope='stage' needs a "
                           'linear attn_mode'):
            tiny(attn_mode=mode, attn_scope='stage')
    with pytest.raises(ValueError, match='attn_mode'):
        tiny(attn_mode='window', attn_scope='stage')


def test_stage_scope_takes_maps_smaller_than_the_window():
    """mmpretrain asserts on maps below the window unless pad_small_map;
    without windows there is nothing to fit."""
    kwargs = dict(attn_mode='linear', pad_small_map=False, window_size=8)
    with pytest.raises(AssertionError, match='smaller than the window'):
        in_mode(tiny(**kwargs), training=False)(images())
    outs = in_mode(tiny(attn_scope='stage', **kwargs),
                   training=False)(images())  # 16x16 ... 2x2 maps
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2]
