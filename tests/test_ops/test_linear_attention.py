"""linear_attention (O(N)) against its O(N^2) reference and by hand."""
import itertools
import math
import warnings

import pytest
import torch

from mmceformer.ops import (FEATURE_MAPS, POS_WEIGHTS, linear_attention,
                            linear_attention_reference)

# every test in both orders of the linear attention (O(N) and O(Nq Nk))
pytestmark = pytest.mark.usefixtures('attention_order')

GRID = (3, 4)  # 12 grid tokens + 1 CLS = 13
SEQ = GRID[0] * GRID[1] + 1


def qkv(batch=2,
        heads=3,
        num_q=SEQ,
        num_k=SEQ,
        dim=8,
        dim_v=5,
        seed=0,
        dtype=torch.float32,
        positive=False):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, num_q, dim, generator=gen, dtype=dtype)
    k = torch.randn(batch, heads, num_k, dim, generator=gen, dtype=dtype)
    v = torch.randn(batch, heads, num_k, dim_v, generator=gen, dtype=dtype)
    if positive:  # identity feature map: keep denominators away from 0
        q, k = q.abs() + 0.1, k.abs() + 0.1
    return q, k, v


CASES = list(itertools.product(FEATURE_MAPS, POS_WEIGHTS))


@pytest.mark.parametrize('feature_map,pos_weight', CASES)
def test_matches_reference_full_sequence(feature_map, pos_weight):
    q, k, v = qkv(positive=feature_map == 'identity')
    kwargs = dict(
        feature_map=feature_map, pos_weight=pos_weight, grid_size=GRID)
    fast = linear_attention(q, k, v, **kwargs)
    slow = linear_attention_reference(q, k, v, **kwargs)
    assert fast.shape == (2, 3, SEQ, 5)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('feature_map,pos_weight', CASES)
def test_matches_reference_pruned_queries_per_sample(feature_map, pos_weight):
    """Queries are a kept subset (CLS + some tokens) with their original
    positions, different per sample; keys are a pruned, padded set."""
    q, k, v = qkv(num_q=5, num_k=9, positive=feature_map == 'identity')
    q_pos = torch.tensor([[0, 2, 5, 7, 12], [0, 1, 3, 10, 11]])
    k_pos = torch.tensor([[0, 1, 2, 4, 5, 7, 9, 12, 3],
                          [0, 1, 3, 6, 8, 10, 11, 2, 4]])
    key_mask = torch.tensor([[True] * 8 + [False], [True] * 7 + [False] * 2])
    kwargs = dict(
        q_pos=q_pos,
        k_pos=k_pos,
        seq_len=SEQ,
        key_mask=key_mask,
        feature_map=feature_map,
        pos_weight=pos_weight,
        grid_size=GRID)
    fast = linear_attention(q, k, v, **kwargs)
    slow = linear_attention_reference(q, k, v, **kwargs)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_shared_positions_broadcast():
    q, k, v = qkv(num_q=4)
    q_pos = torch.tensor([0, 3, 6, 12])
    fast = linear_attention(q, k, v, q_pos=q_pos)
    per_sample = linear_attention(q, k, v, q_pos=q_pos.expand(2, 4))
    torch.testing.assert_close(fast, per_sample)


def test_identity_without_weighting_is_plain_normalised_product():
    q, k, v = qkv(positive=True)
    out = linear_attention(q, k, v, feature_map='identity', pos_weight=None)
    sims = q @ k.transpose(-2, -1)
    by_hand = (sims @ v) / sims.sum(-1, keepdim=True)
    torch.testing.assert_close(out, by_hand, atol=1e-5, rtol=1e-5)


def test_weight_is_thesis_sine_form():
    """eq. (3-8) sin(pi (i + n - j) / 2n) with 1-based i, j equals our
    cos(pi (p_i - p_j) / 2M) with 0-based p and M = n."""
    q, k, v = qkv(num_q=SEQ, positive=True)
    n = SEQ
    i = torch.arange(1, n + 1, dtype=torch.float64)
    sine = torch.sin(math.pi * (i[:, None] + n - i[None, :]) / (2 * n))
    sims = (q.double() @ k.double().transpose(-2, -1)) * sine
    by_hand = (sims @ v.double()) / sims.sum(-1, keepdim=True)
    out = linear_attention(
        q.double(),
        k.double(),
        v.double(),
        feature_map='identity',
        pos_weight='1d')
    torch.testing.assert_close(out, by_hand)


def test_2d_prefix_tokens_have_unit_weight():
    """A prefix token is outside the grid: with constant features its output
    is the plain mean of the values, and every token sees it at weight 1."""
    batch, heads, dim = 1, 1, 4
    q = torch.zeros(batch, heads, SEQ, dim)
    k = torch.zeros(batch, heads, SEQ, dim)
    v = torch.randn(batch, heads, SEQ, 3)
    out = linear_attention(q, k, v, pos_weight='2d', grid_size=GRID)
    torch.testing.assert_close(out[:, :, 0], v.mean(2))
    ref = linear_attention_reference(q, k, v, pos_weight='2d', grid_size=GRID)
    torch.testing.assert_close(out, ref)


def test_padded_keys_contribute_nothing():
    q, k, v = qkv(num_k=SEQ)
    garbage_k = torch.full((2, 3, 4, 8), float('nan'))
    garbage_v = torch.full((2, 3, 4, 5), float('inf'))
    k_pad = torch.cat([k, garbage_k], 2)
    v_pad = torch.cat([v, garbage_v], 2)
    k_pos = torch.cat([torch.arange(SEQ), torch.zeros(4, dtype=torch.long)])
    key_mask = torch.ones(2, SEQ + 4, dtype=torch.bool)
    key_mask[:, SEQ:] = False
    padded = linear_attention(
        q, k_pad, v_pad, k_pos=k_pos, seq_len=SEQ, key_mask=key_mask)
    plain = linear_attention(q, k, v)
    assert torch.isfinite(padded).all()
    torch.testing.assert_close(padded, plain)


@pytest.mark.parametrize('pos_weight', POS_WEIGHTS)
def test_gradcheck_fp64(pos_weight):
    q, k, v = qkv(
        batch=1,
        heads=2,
        num_q=SEQ,
        num_k=SEQ,
        dim=3,
        dim_v=2,
        dtype=torch.float64)
    inputs = tuple(t.requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradcheck(
        lambda a, b, c: linear_attention(
            a, b, c, pos_weight=pos_weight, grid_size=GRID), inputs)


def cpu_autocast_supports(dtype):
    """torch 2.1's CPU autocast has bfloat16 only: asked for float16 it
    warns and stays off."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return torch.autocast('cpu', dtype=dtype)._enabled


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_autocast_stays_finite_at_16k_tokens(dtype):
    if not cpu_autocast_supports(dtype):
        pytest.skip(f'this torch has no CPU autocast to {dtype}')
    gen = torch.Generator().manual_seed(0)
    n, dim = 16384, 16
    q = torch.randn(1, 2, n, dim, generator=gen) * 10
    k = torch.randn(1, 2, n, dim, generator=gen) * 10
    v = torch.randn(1, 2, n, dim, generator=gen) * 10
    with torch.autocast('cpu', dtype=dtype):
        out = linear_attention(q.to(dtype), k.to(dtype), v.to(dtype))
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    # The fp32 reduction keeps it close to the fp32 result.
    ref = linear_attention(
        q.to(dtype).float(),
        k.to(dtype).float(),
        v.to(dtype).float())
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


@pytest.mark.parametrize('kwargs,match', [
    (dict(feature_map='relu'), 'feature_map'),
    (dict(pos_weight='3d'), 'pos_weight'),
    (dict(pos_weight='2d'), 'grid_size'),
    (dict(seq_len=5), 'seq_len'),
    (dict(q_pos=torch.arange(3)), 'q_pos'),
    (dict(q_pos=torch.zeros(SEQ)), 'integer'),
    (dict(key_mask=torch.ones(2, 4, dtype=torch.bool)), 'key_mask'),
    (dict(pos_weight='2d', grid_size=(4, 4)), 'seq_len'),
])
def test_bad_arguments_raise(kwargs, match):
    q, k, v = qkv()
    with pytest.raises(ValueError, match=match):
        linear_attention(q, k, v, **kwargs)


def test_bad_shapes_raise():
    q, k, v = qkv()
    with pytest.raises(ValueError, match='q must be'):
        linear_attention(q[0], k, v)
    with pytest.raises(ValueError, match='k must be'):
        linear_attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match='v must be'):
        linear_attention(q, k, v[:, :, :3])


@pytest.mark.parametrize('pos_weight', POS_WEIGHTS)
def test_groups_match_reference_and_separate_runs(pos_weight):
    """Group ids restrict attention to pairs of one group (a block-diagonal
    mask, e.g. Swin's shifted-window regions)."""
    q, k, v = qkv()
    group = torch.tensor([0, 1, 1, 2, 0, 0, 1, 2, 2, 0, 1, 0, 2])
    kwargs = dict(
        pos_weight=pos_weight, grid_size=GRID, q_group=group, k_group=group)
    fast = linear_attention(q, k, v, **kwargs)
    torch.testing.assert_close(
        fast,
        linear_attention_reference(q, k, v, **kwargs),
        atol=1e-5,
        rtol=1e-5)
    for g in range(3):
        members = (group == g).nonzero().squeeze(1)
        alone = linear_attention(
            q[:, :, members],
            k[:, :, members],
            v[:, :, members],
            q_pos=members,
            k_pos=members,
            seq_len=SEQ,
            pos_weight=pos_weight,
            grid_size=GRID)
        torch.testing.assert_close(
            fast[:, :, members], alone, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match='together'):
        linear_attention(q, k, v, q_group=group)


def test_chunking_changes_nothing():
    q, k, v = qkv(num_q=5, num_k=SEQ)
    q_pos = torch.tensor([0, 2, 5, 7, 12])
    key_mask = torch.ones(2, SEQ, dtype=torch.bool)
    key_mask[1, 9:] = False
    kwargs = dict(
        q_pos=q_pos, key_mask=key_mask, pos_weight='2d', grid_size=GRID)
    whole = linear_attention(q, k, v, **kwargs)
    for chunk_size in (1, 2, 4):
        torch.testing.assert_close(
            linear_attention(q, k, v, chunk_size=chunk_size, **kwargs), whole)
