"""The EAttention module in its four modes."""
import pytest
import torch

from mmceformer.models.layers import ATTN_MODES, EAttention
from mmceformer.ops import gather_tokens, linear_attention

DIMS, HEADS, GRID = 32, 4, (4, 4)
SEQ = GRID[0] * GRID[1] + 1


def tokens(batch=3, num=SEQ, seed=0):
    return torch.randn(
        batch, num, DIMS, generator=torch.Generator().manual_seed(seed))


def build(attn_mode, **kwargs):
    torch.manual_seed(0)
    module = EAttention(DIMS, HEADS, attn_mode=attn_mode, **kwargs)
    module.eval()
    return module


def test_softmax_equals_mmpretrain_multihead_attention():
    from mmpretrain.models.utils import MultiheadAttention
    reference = MultiheadAttention(DIMS, HEADS, qkv_bias=True).eval()
    ours = build('softmax')
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = tokens()
    out = ours(x)
    assert out.index is None and out.mask is None
    torch.testing.assert_close(out.x, reference(x), atol=1e-5, rtol=1e-5)


def test_linear_mode_is_the_linear_kernel():
    module = build('linear', pos_weight='2d')
    x = tokens()
    # (B, N, 3C) -> (3, B, H, N, C/H)
    q, k, v = module.qkv(x).reshape(3, SEQ, 3, HEADS,
                                    DIMS // HEADS).permute(2, 0, 3, 1, 4)
    expected = linear_attention(q, k, v, pos_weight='2d', grid_size=GRID)
    expected = module.proj(expected.transpose(1, 2).reshape(3, SEQ, DIMS))
    torch.testing.assert_close(module(x, grid_size=GRID).x, expected)


@pytest.mark.parametrize('attn_mode,full_mode', [('prune', 'softmax'),
                                                 ('eattn', 'linear')])
@pytest.mark.parametrize('select', ['inverse_cdf', 'topk'])
def test_pruned_rows_equal_full_attention_rows(attn_mode, full_mode, select):
    """Sampling shrinks Q only: kept rows equal the unpruned layer's rows."""
    pruned = build(attn_mode, prune_tokens=True, keep_ratio=0.5, select=select)
    full = build(full_mode)
    full.load_state_dict(pruned.state_dict())
    x = tokens()
    out = pruned(x)
    reference = gather_tokens(full(x).x, out.index)
    assert out.index.shape[1] <= 1 + 8  # CLS + R = round(0.5 * 16)
    assert (out.index[:, 0] == 0).all()  # CLS always kept
    torch.testing.assert_close(
        out.x[out.mask], reference[out.mask], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('attn_mode', ['prune', 'eattn'])
def test_eval_is_deterministic_and_batch_independent(attn_mode):
    module = build(attn_mode, prune_tokens=True)
    x = tokens(batch=4)
    first, second = module(x), module(x)
    assert torch.equal(first.index, second.index)
    torch.testing.assert_close(first.x, second.x)
    alone = module(x[2:3])
    count = int(alone.mask.sum())
    assert first.index[2, :count].tolist() == alone.index[0].tolist()
    torch.testing.assert_close(
        first.x[2, :count], alone.x[0], atol=1e-5, rtol=1e-5)


def test_training_draws_are_random():
    module = build('eattn', prune_tokens=True, keep_ratio=0.5).train()
    x = tokens(batch=8)
    torch.manual_seed(1)
    a = module(x).index
    torch.manual_seed(2)
    b = module(x).index
    assert a.shape != b.shape or not torch.equal(a, b)


@pytest.mark.parametrize('attn_mode', ATTN_MODES)
def test_padding_tokens_change_nothing(attn_mode):
    module = build(attn_mode, prune_tokens=True)
    x = tokens(batch=2)
    padded = torch.cat([x, torch.full((2, 5, DIMS), 1e3)], dim=1)
    pos = torch.cat([torch.arange(SEQ), torch.zeros(5, dtype=torch.long)])
    mask = torch.ones(2, SEQ + 5, dtype=torch.bool)
    mask[:, SEQ:] = False
    out = module(padded, pos=pos, seq_len=SEQ, token_mask=mask)
    plain = module(x)
    if plain.index is None:
        torch.testing.assert_close(
            out.x[:, :SEQ], plain.x, atol=1e-5, rtol=1e-5)
    else:
        assert torch.equal(out.index[out.mask], plain.index[plain.mask])
        torch.testing.assert_close(
            out.x[out.mask], plain.x[plain.mask], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('attn_mode', ['prune', 'eattn'])
def test_mean_query_scoring_without_prefix(attn_mode):
    module = build(
        attn_mode, prune_tokens=True, num_prefix_tokens=0, keep_ratio=0.5)
    out = module(tokens(num=16))
    assert out.index.shape[1] <= 8
    assert out.mask[:, 0].all()


@pytest.mark.parametrize('attn_mode', ATTN_MODES)
def test_backward_through_every_mode(attn_mode):
    module = build(attn_mode, prune_tokens=True).train()
    x = tokens().requires_grad_()
    module(x).x.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert module.qkv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('attn_mode', ['linear', 'eattn'])
def test_bf16_autocast(attn_mode):
    module = build(attn_mode, prune_tokens=True)
    module.eval()
    x = tokens() * 10
    with torch.no_grad():
        full = module(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = module(x)
    assert torch.isfinite(out.x.float()).all()
    # bf16's 8 mantissa bits: within 2% of the scale on the tokens both
    # kept (rounded scores may move a token that sits on a draw)
    for b in range(x.shape[0]):
        rows_full, rows_half = {}, {}
        for rows, result in ((rows_full, full), (rows_half, out)):
            index = range(result.x.shape[1]) if result.index is None \
                else result.index[b].tolist()
            valid = [True] * len(index) if result.mask is None \
                else result.mask[b].tolist()
            rows.update((i, result.x[b, j].float())
                        for j, (i, ok) in enumerate(zip(index, valid)) if ok)
        common = rows_full.keys() & rows_half.keys()
        assert len(common) >= 0.9 * len(rows_full)
        scale = full.x.abs().max()
        for i in common:
            assert (rows_full[i] - rows_half[i]).abs().max() < 0.02 * scale


@pytest.mark.parametrize('kwargs,match', [
    (dict(attn_mode='flash'), 'attn_mode'),
    (dict(keep_ratio=0.0), 'keep_ratio'),
    (dict(keep_ratio=1.2), 'keep_ratio'),
    (dict(score='grad'), 'score'),
    (dict(select='random'), 'select'),
    (dict(prune_mode='hold'), 'prune_mode'),
    (dict(pos_weight='3d'), 'pos_weight'),
    (dict(attn_mode='linear', attn_drop=0.1), 'attn_drop'),
])
def test_bad_options_raise(kwargs, match):
    kwargs.setdefault('attn_mode', 'softmax')
    with pytest.raises(ValueError, match=match):
        EAttention(DIMS, HEADS, **kwargs)
    with pytest.raises(ValueError, match='divisible'):
        EAttention(30, HEADS)


def test_wrong_input_width_and_linear_bias_raise():
    with pytest.raises(ValueError, match='x must be'):
        build('softmax')(torch.randn(1, 5, DIMS + 1))
    with pytest.raises(ValueError, match='attn_bias'):
        build('linear')(tokens(), attn_bias=torch.zeros(1, HEADS, SEQ, SEQ))
