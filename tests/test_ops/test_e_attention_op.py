"""The fused one-pass E-Attention op against its composition."""
import pytest
import torch

from mmceformer.ops import (cls_attention_scores, e_attention, gather_tokens,
                            linear_attention, sample_tokens)

# every test in both orders of the linear attention (O(N) and O(Nq Nk))
pytestmark = pytest.mark.usefixtures('attention_order')

GRID = (4, 5)
SEQ = 1 + 20


def qkv(batch=3, heads=2, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(batch, heads, SEQ, dim, generator=gen) for _ in range(3))


@pytest.mark.parametrize('pos_weight', [None, '1d', '2d'])
@pytest.mark.parametrize('select', ['inverse_cdf', 'topk'])
def test_fused_equals_scores_sampling_and_linear_attention(pos_weight, select):
    q, k, v = qkv()
    mask = torch.ones(3, SEQ, dtype=torch.bool)
    mask[2, 15:] = False  # a padded sample
    kwargs = dict(
        seq_len=SEQ, feature_map='elu1', pos_weight=pos_weight, grid_size=GRID)
    out, index, kept = e_attention(
        q, k, v, 10, token_mask=mask, select=select, **kwargs)
    scores = cls_attention_scores(
        q[:, :, 0], k, key_mask=mask, **kwargs)  # (B, N - 1)
    ref_kept, ref_mask = sample_tokens(scores, 10, mask[:, 1:], select=select)
    assert torch.equal(index[:, 1:][kept[:, 1:]], (ref_kept + 1)[ref_mask])
    q_kept = gather_tokens(q.transpose(1, 2), index).transpose(1, 2)
    expected = linear_attention(
        q_kept, k, v, q_pos=index, key_mask=mask, **kwargs)
    rows = kept[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[rows], expected[rows], atol=1e-5, rtol=1e-5)


def test_fused_groups_restrict_the_cls_row_and_the_queries():
    """With group ids only pairs of one group interact: the CLS row scores
    its own group only (inverse-CDF never draws a zero score), and the kept
    queries equal the O(N^2) reference with the same groups."""
    from mmceformer.ops import linear_attention_reference
    q, k, v = qkv()
    group = torch.tensor([0] + [i % 3 for i in range(20)]).expand(3, -1)
    kwargs = dict(seq_len=SEQ, pos_weight='2d', grid_size=GRID)
    out, index, kept = e_attention(
        q, k, v, 10, token_group=group, num_groups=3, **kwargs)
    assert (group.gather(1, index)[kept] == 0).all()
    assert kept.sum() > 3  # more than the CLS tokens were kept
    q_kept = gather_tokens(q.transpose(1, 2), index).transpose(1, 2)
    expected = linear_attention_reference(
        q_kept,
        k,
        v,
        q_pos=index,
        q_group=group.gather(1, index),
        k_group=group,
        **kwargs)
    rows = kept[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[rows], expected[rows], atol=1e-5, rtol=1e-5)


def test_fused_chunking_and_errors():
    q, k, v = qkv()
    whole = e_attention(q, k, v, 8)
    chunked = e_attention(q, k, v, 8, chunk_size=4)
    torch.testing.assert_close(whole[0], chunked[0])
    assert torch.equal(whole[1], chunked[1])
    with pytest.raises(ValueError, match='num_prefix_tokens'):
        e_attention(q, k, v, 8, num_prefix_tokens=0)
    with pytest.raises(ValueError, match='self-attention'):
        e_attention(q[:, :, :5], k, v, 8)


def test_identity_feature_map_scores_follow_the_fused_denominator_rule():
    """'identity' (Ours-B) similarities can be negative: a head whose CLS
    row sums below 0 keeps its sign in both score paths (it was divided by
    eps in cls_attention_scores, so that head alone decided the kept set),
    and both paths keep the same tokens."""
    q, k, v = qkv(batch=2, heads=2)
    k = k.clone()
    # head 1: the CLS query points away from every key -> negative row sum
    k[:, 1] = -q[:, 1, :1].sign() * k[:, 1].abs()
    kwargs = dict(seq_len=SEQ, feature_map='identity', pos_weight=None)
    rows = (q[:, :, :1] @ k.transpose(-2, -1))[:, :, 0]  # (B, H, N)
    assert (rows[:, 1].sum(-1) < 0).all()
    attn = rows / rows.sum(-1, keepdim=True)
    expected = attn.sum(1)[:, 1:].clamp(min=0)
    expected = expected / expected.sum(-1, keepdim=True)
    scores = cls_attention_scores(q[:, :, 0], k, **kwargs)
    torch.testing.assert_close(scores, expected)
    _, index, kept = e_attention(q, k, v, 12, **kwargs)
    ref_kept, ref_mask = sample_tokens(scores, 12)
    assert torch.equal(index[:, 1:][kept[:, 1:]], (ref_kept + 1)[ref_mask])


@pytest.mark.parametrize('train_draws', ['systematic', 'independent'])
def test_fused_training_draws_follow_train_draws(train_draws):
    q, k, v = qkv()
    gen = torch.Generator().manual_seed(0)
    _, index, kept = e_attention(
        q, k, v, 14, deterministic=False, generator=gen,
        train_draws=train_draws)
    scores = cls_attention_scores(q[:, :, 0], k)
    gen = torch.Generator().manual_seed(0)
    ref_kept, ref_mask = sample_tokens(
        scores, 14, deterministic=False, generator=gen,
        train_draws=train_draws)
    assert torch.equal(index[:, 1:][kept[:, 1:]], (ref_kept + 1)[ref_mask])
