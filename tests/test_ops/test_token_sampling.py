"""CLS scores (eq. 3-10) and inverse-CDF sampling (eq. 3-12/3-13)."""
import pytest
import torch

from mmceformer.ops import (GridBuffer, cls_attention_scores, gather_tokens,
                            grid_inverse_cdf, linear_attention_reference,
                            num_kept_tokens, place_tokens, sample_tokens,
                            scatter_tokens)


def qkv(batch=2, heads=3, num=13, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(batch, heads, num, dim, generator=gen) for _ in range(3))


def explicit_rows(q, k, kernel, pos_weight='1d', seq_len=None):
    """Full attention matrices (B, H, N, N) built the O(N^2) way."""
    if kernel == 'softmax':
        return (q @ k.transpose(-2, -1) * q.shape[-1]**-0.5).softmax(-1)
    # Rows of the linear kernel: attention of each query = reference output
    # with one-hot values.
    num = k.shape[2]
    eye = torch.eye(num).expand(*k.shape[:2], num, num)
    return linear_attention_reference(
        q, k, eye, pos_weight=pos_weight, seq_len=seq_len)


@pytest.mark.parametrize('kernel', ['linear', 'softmax'])
def test_cls_scores_match_explicit_attention_row(kernel):
    q, k, v = qkv()
    scores = cls_attention_scores(q[:, :, 0], k, kernel=kernel)
    attn = explicit_rows(q, k, kernel)  # (B, H, N, N)
    row = attn[:, :, 0, 1:].sum(1)  # heads summed, CLS excluded
    torch.testing.assert_close(scores, row / row.sum(-1, keepdim=True))
    assert scores.shape == (2, 12)


@pytest.mark.parametrize('kernel', ['linear', 'softmax'])
def test_all_score_is_mean_received_attention(kernel):
    q, k, v = qkv()
    scores = cls_attention_scores(
        q[:, :, 0], k, q=q, kernel=kernel, score='all')
    received = explicit_rows(q, k, kernel).sum(2).sum(1)[:, 1:]
    torch.testing.assert_close(scores,
                               received / received.sum(-1, keepdim=True))


def test_cls_v_score_weights_by_value_norm():
    q, k, v = qkv()
    scores = cls_attention_scores(
        q[:, :, 0], k, v, kernel='softmax', score='cls_v')
    attn = explicit_rows(q, k, 'softmax')[:, :, 0] * v.norm(dim=-1)
    expected = attn.sum(1)[:, 1:]
    torch.testing.assert_close(scores,
                               expected / expected.sum(-1, keepdim=True))


def test_random_score_uses_generator_and_masks():
    q, k, _ = qkv()
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[1, 10:] = False
    a = cls_attention_scores(
        q[:, :, 0],
        k,
        score='random',
        key_mask=mask,
        generator=torch.Generator().manual_seed(3))
    b = cls_attention_scores(
        q[:, :, 0],
        k,
        score='random',
        key_mask=mask,
        generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert (a[1, 9:] == 0).all() and torch.allclose(a.sum(-1), torch.ones(2))


def test_masked_keys_get_no_score_and_do_not_change_others():
    q, k, _ = qkv()
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[:, 9:] = False
    k_garbage = k.clone()
    k_garbage[:, :, 9:] = 1e4
    scores = cls_attention_scores(q[:, :, 0], k_garbage, key_mask=mask)
    plain = cls_attention_scores(q[:, :, 0], k[:, :, :9], seq_len=13)
    assert (scores[:, 8:] == 0).all()
    torch.testing.assert_close(scores[:, :8], plain)


def test_mean_query_without_prefix_tokens():
    """Swin: no CLS, the score query is the mean query, no position."""
    q, k, _ = qkv()
    scores = cls_attention_scores(
        q.mean(2), k, kernel='linear', num_prefix_tokens=0, q_cls_pos=None)
    phi = torch.nn.functional.elu
    sims = ((phi(q.mean(2, keepdim=True)) + 1) @ (phi(k) + 1).transpose(
        -2, -1))[:, :, 0]
    expected = (sims / sims.sum(-1, keepdim=True)).sum(1)
    torch.testing.assert_close(scores,
                               expected / expected.sum(-1, keepdim=True))


@pytest.mark.parametrize('kwargs,match', [
    (dict(kernel='cosine'), 'kernel'),
    (dict(score='max'), 'score'),
    (dict(score='all'), 'needs the queries'),
    (dict(score='cls_v'), 'needs the values'),
    (dict(num_prefix_tokens=20), 'num_prefix_tokens'),
])
def test_score_bad_arguments(kwargs, match):
    q, k, _ = qkv()
    with pytest.raises(ValueError, match=match):
        cls_attention_scores(q[:, :, 0], k, **kwargs)


# --- sampling ---------------------------------------------------------------


def random_scores(batch=4, num=50, seed=0):
    return torch.rand(
        batch, num, generator=torch.Generator().manual_seed(seed))


def test_inverse_cdf_grid_matches_hand_computation():
    scores = torch.tensor([[0.2, 0.0, 0.5, 0.3]])
    # R = 4: u = 0.125, 0.375, 0.625, 0.875; CDF = 0.2, 0.2, 0.7, 1.0
    index, mask = sample_tokens(scores, 4)
    assert index.tolist() == [[0, 2, 3]] and mask.all()


@pytest.mark.parametrize('select', ['inverse_cdf', 'topk'])
def test_sampling_keeps_at_most_r_sorted_unique_valid(select):
    scores = random_scores()
    valid = torch.ones_like(scores, dtype=torch.bool)
    valid[0, 30:] = False
    valid[2, ::2] = False
    for deterministic in (True, False):
        index, mask = sample_tokens(
            scores,
            20,
            valid,
            select=select,
            deterministic=deterministic,
            generator=torch.Generator().manual_seed(1))
        assert index.shape[1] <= 20
        for row in range(4):
            kept = index[row][mask[row]]
            assert len(kept) <= 20
            assert (kept[1:] > kept[:-1]).all()  # sorted, no duplicate
            assert valid[row, kept].all()
            if select == 'topk':
                assert len(kept) == 20


def test_topk_keeps_highest_scores():
    scores = random_scores(batch=1)
    index, _ = sample_tokens(scores, 5, select='topk')
    expected = scores.topk(5).indices.sort().values
    assert index.tolist() == expected.tolist()


def test_one_hot_score_keeps_one_token():
    scores = torch.zeros(2, 30)
    scores[0, 7] = 1
    scores[1, 29] = 1
    for deterministic in (True, False):
        index, mask = sample_tokens(scores, 21, deterministic=deterministic)
        assert index.shape == (2, 1) and mask.all()
        assert index[:, 0].tolist() == [7, 29]


def test_deterministic_and_independent_of_batch():
    scores = random_scores(batch=3)
    alone, alone_mask = sample_tokens(scores[1:2], 25)
    batch, batch_mask = sample_tokens(scores, 25)
    again, _ = sample_tokens(scores, 25)
    assert torch.equal(batch, again)
    count = int(alone_mask.sum())
    assert batch[1][batch_mask[1]].tolist() == alone[0, :count].tolist()


def test_high_scores_are_kept_more_often():
    """Random draws: a token with 10x the score is kept far more often."""
    scores = torch.ones(1, 40)
    scores[0, :5] = 10
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(40)
    for _ in range(200):
        index, mask = sample_tokens(
            scores, 10, deterministic=False, generator=gen)
        counts[index[mask]] += 1
    assert counts[:5].mean() > 4 * counts[5:].mean()


def test_adaptive_count_depends_on_score_concentration():
    flat = torch.ones(1, 100)
    peaked = torch.softmax(torch.randn(1, 100) * 5, -1)
    _, flat_mask = sample_tokens(flat, 70)
    _, peaked_mask = sample_tokens(peaked, 70)
    assert flat_mask.sum() == 70
    assert peaked_mask.sum() < 70


def test_zero_scores_fall_back_to_uniform_over_valid():
    scores = torch.zeros(1, 10)
    valid = torch.tensor([[True] * 6 + [False] * 4])
    index, mask = sample_tokens(scores, 6, valid)
    assert index[mask].tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize('kwargs,match', [
    (dict(select='bottomk'), 'select'),
    (dict(num_samples=0), 'num_samples'),
    (dict(num_samples=2.5), 'num_samples'),
])
def test_sampling_bad_arguments(kwargs, match):
    args = dict(num_samples=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sample_tokens(random_scores(), **args)
    with pytest.raises(ValueError, match='non-negative'):
        sample_tokens(-random_scores(), 3)


def test_num_kept_tokens_and_keep_ratio_errors():
    assert num_kept_tokens(0.7, 196) == 137
    assert num_kept_tokens(1.0, 196) == 196
    assert num_kept_tokens(0.001, 10) == 1
    for bad in (0, -0.1, 1.5, 'half'):
        with pytest.raises(ValueError, match='keep_ratio'):
            num_kept_tokens(bad, 196)


def test_gather_scatter_round_trip():
    x = torch.randn(2, 6, 3)
    index = torch.tensor([[1, 4, 0], [2, 3, 5]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    picked = gather_tokens(x, index)
    torch.testing.assert_close(picked[1], x[1, [2, 3, 5]])
    out = scatter_tokens(torch.zeros_like(x), index, picked * 2, mask)
    assert out[0, [1, 4]].equal(x[0, [1, 4]] * 2)
    assert (out[0, [0, 2, 3, 5]] == 0).all()  # padded entry (0) not written
    placed = place_tokens(index, picked * 2, mask, 6, torch.float64)
    assert placed.dtype == torch.float64 and placed.shape == (2, 6, 3)
    assert placed.equal(out.double())
    # onto a base: the base elsewhere, a padded entry repeating a real
    # index (1) does not overwrite it
    base = torch.randn(2, 6, 3, requires_grad=True)
    src = torch.randn(2, 3, 3, requires_grad=True)
    index[0, 2] = 1
    out = scatter_tokens(base, index, src, mask)
    assert out[0, [1, 4]].equal(src[0, :2]) and out[1, [2, 3, 5]].equal(src[1])
    assert out[0, [0, 2, 3, 5]].equal(base[0, [0, 2, 3, 5]])
    assert out[1, [0, 1, 4]].equal(base[1, [0, 1, 4]])
    out.sum().backward()  # gradients reach the written and the kept entries
    assert base.grad[0].sum(-1).tolist() == [3, 0, 3, 3, 0, 3]
    assert src.grad.sum(-1).tolist() == [[3, 3, 0], [3, 3, 3]]


@pytest.mark.parametrize('layout', ['contiguous', 'transposed', 'expanded',
                                    'positions'])
@pytest.mark.parametrize('batch', [1, 2])
def test_gather_tokens_is_advanced_indexing_in_every_layout(layout, batch):
    """Rows by index_select where (B * N, ...) is a view, by advanced
    indexing where it is not (a transposed (B, N, H, D) with B > 1): the
    values and gradients of ``x[b, index]``, and an index of one image
    broadcast over the batch."""
    gen = torch.Generator().manual_seed(0)
    source = {
        'contiguous': lambda: torch.randn(batch, 7, 5, generator=gen),
        # (B, H, N, D) -> (B, N, H, D), as E-Attention picks its queries
        'transposed': lambda: torch.randn(
            batch, 3, 7, 4, generator=gen).transpose(1, 2),
        'expanded': lambda: torch.randn(1, 7, 5, generator=gen).expand(
            batch, 7, 5),
        'positions': lambda: torch.randperm(7, generator=gen).expand(
            batch, 7).contiguous(),
    }[layout]()
    x = source.double().requires_grad_() if layout != 'positions' else source
    index = torch.tensor([[6, 0, 3], [2, 2, 5]])[:batch]
    b = torch.arange(batch)[:, None]
    picked = gather_tokens(x, index)
    assert picked.equal(x[b, index])
    if layout == 'positions':
        return
    weights = torch.randn(picked.shape, generator=gen, dtype=torch.float64)
    grad, = torch.autograd.grad((picked * weights).sum(), x)
    expected, = torch.autograd.grad((x[b, index] * weights).sum(), x)
    assert grad.equal(expected)
    if batch == 2:  # one image's index for both images
        assert gather_tokens(x, index[:1]).equal(x[b, index[:1]])


def test_gather_tokens_broadcasts_one_image_over_a_batch_of_indices():
    """x of one image, index of two (positions shared by a batch); and a
    (1, 1, F) row expanded over (B, N, F), whose flatten is a view of
    stride 0: both as advanced indexing picks them."""
    x = torch.randn(1, 7, 5)
    index = torch.tensor([[6, 0, 3], [2, 2, 5]])
    b = torch.arange(2)[:, None]
    assert gather_tokens(x, index).equal(x[b * 0, index])
    row = torch.randn(1, 1, 5).expand(2, 7, 5)
    assert gather_tokens(row, index).equal(row[b, index])


def test_token_moves_refuse_a_non_long_index():
    """A bool index would index as a mask, an int one is not an index
    dtype of index_copy_: both are refused by name."""
    x = torch.randn(2, 6, 3)
    mask = torch.ones(2, 2, dtype=torch.bool)
    for bad in (torch.tensor([[True, False]] * 2), torch.zeros(2, 2).int()):
        with pytest.raises(TypeError, match='index must be torch.long'):
            gather_tokens(x, bad)
        with pytest.raises(TypeError, match='index must be torch.long'):
            scatter_tokens(x, bad, x[:, :2], mask)
        with pytest.raises(TypeError, match='index must be torch.long'):
            place_tokens(bad, x[:, :2], mask, 6, x.dtype)


def test_grid_buffer_equals_a_new_zero_grid_for_every_placement():
    """Same placement with new values, a subset (the stale rows must be 0
    again), a padded one, another shape and dtype: each result equals
    place_tokens's, and the buffer is reused where nothing else needs it."""
    gen = torch.Generator().manual_seed(0)
    buffer = GridBuffer()
    pos_a, pos_b, pos_c = object(), object(), object()
    steps = [
        ([[0, 2, 3, 5], [1, 2, 4, 5]], None, pos_a, 6, torch.float32),
        ([[0, 2, 3, 5], [1, 2, 4, 5]], None, pos_a, 6, torch.float32),
        ([[2, 5, 0, 0], [1, 4, 5, 0]], [[1, 1, 0, 0], [1, 1, 1, 0]], pos_b,
         6, torch.float32),
        ([[3, 0, 0, 0], [0, 1, 2, 3]], [[1, 0, 0, 0], [1, 1, 1, 1]], pos_c,
         6, torch.float32),
        ([[3, 1], [0, 7]], None, pos_a, 8, torch.float64),
    ]
    ptrs = []
    with torch.no_grad():
        for index, mask, key, num, dtype in steps:
            index = torch.tensor(index)
            mask = torch.ones_like(index, dtype=torch.bool) if mask is None \
                else torch.tensor(mask, dtype=torch.bool)
            src = torch.randn(2, index.shape[1], 5, generator=gen).to(dtype)
            got = buffer.place(index, src, mask, num, key=(key, None))
            assert got.equal(place_tokens(index, src, mask, num, dtype))
            ptrs.append(got.data_ptr())
    assert len(set(ptrs[:4])) == 1 and ptrs[4] != ptrs[0]  # one buffer
    # with autograd on, backward needs each grid: a new one per call
    src = torch.randn(2, 4, 5, requires_grad=True)
    index = torch.tensor(steps[0][0])
    mask = torch.ones_like(index, dtype=torch.bool)
    first = buffer.place(index, src, mask, 6, key=(pos_a, None))
    second = buffer.place(index, src * 2, mask, 6, key=(pos_a, None))
    assert first.data_ptr() != second.data_ptr()
    assert first.equal(place_tokens(index, src, mask, 6, src.dtype))
    assert first.requires_grad


def exact_grid_inverse_cdf(weights, num_samples):
    """Eq. (3-13) at u_k = (k + 1/2) / R in integer arithmetic, for integer
    weights: index_k = #{j : CDF_j <= u_k * total}."""
    cdf = torch.cumsum(weights.long(), -1)
    total = cdf[:, -1:]
    k = torch.arange(num_samples)
    # CDF_j <= (2k + 1) / (2R) * total  <=>  2 R CDF_j <= (2k + 1) total
    below = 2 * num_samples * cdf[:, None, :] <= \
        (2 * k[None, :, None] + 1) * total[:, :, None]
    return below.sum(-1)


@pytest.mark.parametrize('seed', range(5))
def test_grid_inverse_cdf_is_exact_on_ties_and_matches_searchsorted(seed):
    """The closed form (histogram + cumsum, no searchsorted) equals integer
    arithmetic where draws fall exactly on CDF values (0/1 and uniform
    scores), and searchsorted on real-valued scores."""
    gen = torch.Generator().manual_seed(seed)
    num = 40 + 17 * seed
    for weights in ((torch.rand(3, num, generator=gen) > 0.6).long(),
                    torch.ones(3, num, dtype=torch.long),
                    torch.randint(0, 4, (3, num), generator=gen)):
        weights[:, 0] += (weights.sum(-1) == 0).long()
        for num_samples in (1, 7, num // 2, num, 2 * num + 1):
            assert torch.equal(
                grid_inverse_cdf(weights.float(), num_samples),
                exact_grid_inverse_cdf(weights, num_samples))
    probs = torch.rand(3, num, generator=gen)**4
    cdf = probs.double().cumsum(-1)
    u = (torch.arange(31, dtype=torch.float64) + 0.5) / 31
    assert torch.equal(
        grid_inverse_cdf(probs, 31),
        torch.searchsorted(cdf, u * cdf[:, -1:], right=True))


@pytest.mark.parametrize('select', ['inverse_cdf', 'topk'])
@pytest.mark.parametrize('deterministic', [True, False])
def test_static_and_compact_layouts_keep_the_same_tokens(
        select, deterministic):
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(4, 30, generator=gen)**6
    valid = torch.rand(4, 30, generator=gen) > 0.2
    valid[3] = False  # an image without valid tokens keeps none
    outs = []
    for static in (True, False):
        outs.append(
            sample_tokens(
                scores,
                21,
                valid,
                select=select,
                deterministic=deterministic,
                generator=torch.Generator().manual_seed(1),
                static=static))
    (s_index, s_mask), (c_index, c_mask) = outs
    assert s_index.shape == (4, 21)  # R slots whatever the scores
    assert c_index.shape[1] == int(c_mask.sum(-1).max())
    if select == 'inverse_cdf':  # peaked scores: duplicates collapsed
        assert c_index.shape[1] < 21
    for row in range(4):
        assert s_index[row][s_mask[row]].tolist() == \
            c_index[row][c_mask[row]].tolist()
    assert not s_mask[3].any() and not c_mask[3].any()
    # masked entries point at token 0 (safe to gather)
    assert (s_index[~s_mask] == 0).all()


def test_static_layout_is_taken_while_tracing():
    scores = torch.rand(2, 30)**6

    def kept(s):
        return sample_tokens(s, 21)

    traced = torch.jit.trace(kept, (scores, ), check_trace=False)
    other = torch.rand(2, 30)**6
    index, mask = traced(other)
    eager_index, eager_mask = sample_tokens(other, 21)
    assert index.shape == (2, 21)
    for row in range(2):
        assert index[row][mask[row]].tolist() == \
            eager_index[row][eager_mask[row]].tolist()


def test_systematic_draws_are_the_grid_shifted_by_one_offset():
    """u_k = (k + U) / R with one U per image: at U = 1/2 the evaluation
    grid; against searchsorted at the same draws for any U."""
    from mmceformer.ops import systematic_inverse_cdf
    probs = random_scores(batch=3, num=30)
    torch.testing.assert_close(
        grid_inverse_cdf(probs, 17, torch.full((3, 1), 0.5)),
        grid_inverse_cdf(probs, 17))
    gen = torch.Generator().manual_seed(0)
    index = systematic_inverse_cdf(probs, 17, gen)
    offset = torch.rand(3, 1, generator=torch.Generator().manual_seed(0))
    u = (torch.arange(17) + offset.double()) / 17  # (B, R)
    cdf = probs.double().cumsum(-1)
    expected = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    assert torch.equal(index, expected)


def test_systematic_draws_keep_the_grid_count_and_every_heavy_token():
    """A token with share p of the score is kept with probability
    min(1, p R) by systematic draws, so their expected count of distinct
    tokens is sum_j min(1, p_j R), which the evaluation grid (one offset,
    1/2) meets too; independent draws keep about 1 - 1/e of R on flat
    scores. A token with at least 1/R of the score is always kept."""
    gen = torch.Generator().manual_seed(0)
    for concentration in (0.3, 1.0, 10.0):
        probs = torch.distributions.Gamma(concentration, 1.).sample((8, 196))
        share = probs / probs.sum(-1, keepdim=True)
        expected = (share * 137).clamp(max=1).sum(-1)  # (B,)
        _, grid_mask = sample_tokens(probs, 137)
        heavy = share >= 1 / 137
        counts = []
        for _ in range(20):
            index, mask = sample_tokens(
                probs, 137, deterministic=False, generator=gen, static=True)
            counts.append(mask.sum(-1).float())
            kept = torch.zeros(heavy.shape).scatter_add(1, index,
                                                        mask.float())
            assert (kept[heavy] > 0).all()
        mean = torch.stack(counts).mean(0)
        assert ((mean / expected - 1).abs() < 0.03).all(), (mean, expected)
        grid = grid_mask.sum(-1).float()  # one offset: within a few tokens
        assert (grid.mean() / expected.mean() - 1).abs() < 0.03
    flat = torch.ones(8, 196)
    _, flat_independent = sample_tokens(
        flat, 137, deterministic=False, generator=gen,
        train_draws='independent')
    assert flat_independent.sum(-1).float().mean() < 0.8 * 137


def test_bad_train_draws_raises():
    with pytest.raises(ValueError, match='train_draws'):
        sample_tokens(random_scores(), 5, train_draws='stratified')


@pytest.mark.parametrize('score,kernel', [('cls', 'linear'),
                                          ('cls_v', 'softmax'),
                                          ('all', 'linear'),
                                          ('all', 'softmax')])
def test_scores_hold_no_autograd_graph(score, kernel):
    """Scores only pick indices: none is differentiable, and 'all' keeps no
    (Nq x Nk) similarities for a backward that never comes."""
    q, k, v = (t.requires_grad_() for t in qkv())
    scores = cls_attention_scores(
        q[:, :, 0], k, v, q=q, kernel=kernel, score=score)
    assert not scores.requires_grad and scores.grad_fn is None


def test_all_score_with_masks_and_positions_equals_explicit_rows():
    """The O(N) 'all' of the linear kernel with padded keys and queries and
    the cos re-weighting: the explicit rows of the valid queries, summed."""
    q, k, _ = qkv(batch=2, num=11)
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, 7:] = False
    scores = cls_attention_scores(
        q[:, :, 0], k, q=q, kernel='linear', score='all', key_mask=mask,
        query_mask=mask)
    for b, n in enumerate((11, 7)):
        rows = explicit_rows(q[b:b + 1, :, :n], k[b:b + 1, :, :n],
                             'linear', seq_len=11)  # (1, H, n, n)
        received = rows.sum(2).sum(1)[:, 1:]
        torch.testing.assert_close(
            scores[b:b + 1, :n - 1], received / received.sum(-1, keepdim=True))
        assert (scores[b, n - 1:] == 0).all()
