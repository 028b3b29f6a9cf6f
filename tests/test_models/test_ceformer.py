"""CEFormer: sizes, the C1-C4 switches, classification and dense outputs."""
import itertools

import pytest
import torch
from helpers import (count_scatters, images, in_mode, peaked_attention,
                     probe_loss)

from mmceformer.models import CEFormer

TINY = dict(embed_dims=32, depth=4, num_heads=2, stem_channels=16)
THESIS_PARAMS_M = {'s': 28, 'm': 55, 'l': 92}  # table 4-2, with the head


def tiny(**kwargs):
    torch.manual_seed(0)
    kwargs.setdefault('arch', TINY)
    kwargs.setdefault('img_size', 64)
    return CEFormer(**kwargs)


@pytest.mark.parametrize('arch', ['s', 'm', 'l'])
def test_parameter_counts_within_10_percent_of_table_4_2(arch):
    model = CEFormer(arch=arch)
    head = model.embed_dims * 1000 + 1000  # 1000-class linear head
    params = sum(p.numel() for p in model.parameters()) + head
    target = THESIS_PARAMS_M[arch] * 1e6
    assert abs(params - target) / target < 0.10, params / 1e6


@pytest.mark.parametrize('c1,c2,c3,c4',
                         list(itertools.product([True, False], repeat=4)))
def test_all_16_switch_combinations_forward_backward(c1, c2, c3, c4):
    model = in_mode(
        tiny(use_c1=c1, use_c2=c2, use_c3=c3, use_c4=c4), training=True)
    out = model(images())[0]
    assert out.shape == (2, 32)
    probe_loss([out]).backward()
    for param in (model.cls_token, model.layers[-1].attn.qkv.weight,
                  model.layers[0].ffn.fc1.weight):
        assert param.grad is not None and param.grad.abs().max() > 1e-6
    has_value_conv = model.layers[0].attn.value_conv is not None
    assert has_value_conv == c1
    assert len(model.layers[0].ffn.dw_convs) == int(c2) + 2 * int(c3)
    assert isinstance(model.patch_embed, torch.nn.Conv2d) != c4


def test_classification_at_224_prunes_tokens():
    model = in_mode(CEFormer(arch='s'), training=False)
    with torch.no_grad():
        out = model(images(batch=1, size=(224, 224)))[0]
    assert out.shape == (1, 384)
    counts = torch.stack(model.token_counts)[:, 0]
    assert (counts[:3] == 196).all()
    assert (counts[3:] <= 137).all()  # R = round(0.7 * 196)


@pytest.mark.parametrize('prune_mode', ['drop', 'skip'])
def test_detection_pyramid_non_square(prune_mode):
    model = in_mode(
        tiny(out_type='pyramid', prune_mode=prune_mode), training=False)
    x = images(size=(256, 320))
    outs = model(x)
    assert [o.shape for o in outs] == [(2, 8, 64, 80), (2, 16, 32, 40),
                                       (2, 32, 16, 20), (2, 32, 8, 10)]
    again = model(x)
    for a, b in zip(outs, again):
        torch.testing.assert_close(a, b)
    processed = torch.stack(model.token_counts)  # (blocks, B)
    assert (processed[:3] == 320).all()
    assert (processed[3:] <= 224).all()  # R = round(0.7 * 320)


def test_drop_mode_convolutions_see_zero_grid_of_kept_tokens():
    """With keep_ratio=1 and topk every token is kept: drop and skip give
    the same as no pruning."""
    ref = in_mode(tiny(attn_mode='linear', out_type='featmap'), training=False)
    for mode in ('drop', 'skip'):
        pruned = in_mode(
            tiny(
                attn_mode='eattn',
                out_type='featmap',
                keep_ratio=1.0,
                select='topk',
                prune_mode=mode),
            training=False)
        pruned.load_state_dict(ref.state_dict())
        x = images()
        torch.testing.assert_close(
            pruned(x)[0], ref(x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('out_type', ['cls_token', 'featmap'])
def test_reused_grid_without_autograd_equals_new_grids(out_type):
    """Eval without autograd places every FFN's kept tokens into one grid
    buffer (GridBuffer); with autograd each block gets a new zero grid.
    Drop mode, two pruning blocks, a batch whose images keep different
    counts (padding): the outputs agree."""
    model = in_mode(
        peaked_attention(
            tiny(keep_ratio=0.5, prune_layers=[1, 3], out_type=out_type),
            std=1.0, key_bias=-2.),
        training=False)
    x = images(batch=3, size=(64, 96))
    with torch.no_grad():
        reused = model(x)[0]
    counts = torch.stack(model.token_counts)
    with torch.enable_grad():
        fresh = model(x)[0]
    assert counts[-1].unique().numel() > 1  # padded: counts differ
    torch.testing.assert_close(reused, fresh, rtol=0, atol=0)


def _kept_cells(featmap):
    return featmap.abs().sum(1) != 0  # (B, Hg, Wg)


def test_skip_ffn_input_kept_tokens_is_the_drop_ffn_in_skip_mode():
    """One pruning block, the last: with skip_ffn_input='kept_tokens' the
    kept tokens come out as in drop mode (their FFN grid zero at pruned
    cells) and the pruned ones unchanged; 'all_tokens' (the default) lets
    the convolutions see the pruned tokens, which changes the kept
    tokens' outputs. Without C2/C3 the FFN is token-wise: both equal."""
    common = dict(keep_ratio=0.5, prune_layers=[3], out_type='featmap')
    x = images(batch=2)
    with torch.no_grad():
        drop = in_mode(tiny(**common), training=False)(x)[0]
        kept = in_mode(
            tiny(prune_mode='skip', skip_ffn_input='kept_tokens', **common),
            training=False)(x)[0]
        every = in_mode(
            tiny(prune_mode='skip', **common), training=False)(x)[0]
    cells = _kept_cells(drop)[:, None].expand_as(drop)
    assert 0 < cells[:, 0].float().mean() < 1
    torch.testing.assert_close(kept[cells], drop[cells])
    assert (kept[~cells] != 0).all()  # the pruned tokens stay
    assert not torch.allclose(every[cells], drop[cells], atol=1e-3)
    with torch.no_grad():
        outs = [
            in_mode(
                tiny(
                    prune_mode='skip',
                    skip_ffn_input=choice,
                    use_c2=False,
                    use_c3=False,
                    **common),
                training=False)(x)[0]
            for choice in CEFormer.SKIP_FFN_INPUTS
        ]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


@pytest.mark.parametrize('skip_ffn_input,use_c2,scatters', [
    ('all_tokens', True, 2),
    ('kept_tokens', True, 1),
    ('all_tokens', False, 1),
])
def test_skip_mode_builds_the_full_sequence_only_for_convolutions(
        monkeypatch, skip_ffn_input, use_c2, scatters):
    """A pruning block in skip mode writes its kept tokens back into the
    full sequence (one scatter); a second one assembles the FFN's input
    sequence, only when its convolutions read it."""
    calls = count_scatters(monkeypatch)
    model = in_mode(
        tiny(
            prune_layers=[3],
            prune_mode='skip',
            skip_ffn_input=skip_ffn_input,
            use_c2=use_c2,
            use_c3=use_c2,
            out_type='featmap'),
        training=False)
    with torch.no_grad():
        model(images(batch=1))
    assert len(calls) == scatters


def test_batch_independence_in_eval():
    model = in_mode(tiny(keep_ratio=0.5), training=False)
    x = images(batch=3)
    torch.testing.assert_close(
        model(x)[0][2:], model(x[2:])[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='xl'), 'arch'),
    (dict(arch=dict(embed_dims=32)), 'arch'),
    (dict(img_size=200), 'img_size'),
    (dict(keep_ratio=1.5), 'keep_ratio'),
    (dict(attn_mode='fast'), 'attn_mode'),
    (dict(out_type='tokens'), 'out_type'),
    (dict(skip_ffn_input='pruned', prune_mode='skip'), 'skip_ffn_input'),
    (dict(skip_ffn_input='kept_tokens', prune_mode='drop'), 'skip_ffn_input'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_input_not_divisible_by_16_raises():
    with pytest.raises(ValueError, match='divisible by 16'):
        tiny()(images(size=(64, 70)))


def test_checkpoint_of_another_img_size_loads_with_resized_pos_embed():
    """Pre-trained at 64, loaded at 128 (the toy demo: classification ->
    detection), as mmpretrain's VisionTransformer loads."""
    from mmpretrain.models.utils import resize_pos_embed
    arch = dict(embed_dims=32, depth=2, num_heads=2, stem_channels=8)
    torch.manual_seed(0)
    small = CEFormer(arch=arch, img_size=64)
    small.init_weights()
    large = CEFormer(arch=arch, img_size=128)
    large.load_state_dict(small.state_dict(), strict=True)
    expected = resize_pos_embed(
        small.pos_embed.detach(), (4, 4), (8, 8),
        mode='bicubic',
        num_extra_tokens=1)
    assert large.pos_embed.shape == (1, 1 + 8 * 8, 32)
    torch.testing.assert_close(large.pos_embed.detach(), expected)
    torch.testing.assert_close(large.cls_token, small.cls_token)
    # Another width is still a shape error, not a resize.
    wider = CEFormer(arch=dict(arch, embed_dims=64, num_heads=2),
                     img_size=64).state_dict()
    with pytest.raises(RuntimeError, match='pos_embed'):
        large.load_state_dict(wider)
