"""Parameter-free token scoring and sampling (thesis section 3.3) and the
CLS row of linear attention used to fuse them (section 3.4).

Pure torch, no OpenMMLab import.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .linear_attention import (FEATURE_MAPS, POS_WEIGHTS, _features,
                               autocast_disabled, check_choice,
                               feature_map_fn, is_tracing, lift_features,
                               safe_denominator)

SCORES = ('cls', 'cls_v', 'all', 'random')
SELECTS = ('inverse_cdf', 'topk')
KERNELS = ('linear', 'softmax')
#: How training draws the R uniforms of eq. (3-13) (evaluation always
#: takes the grid ``u_k = (k + 1/2) / R``): ``'systematic'``, one uniform
#: offset U per image, ``u_k = (k + U) / R``; ``'independent'``, R
#: independent uniforms.
TRAIN_DRAWS = ('systematic', 'independent')


def num_kept_tokens(keep_ratio: float, num_tokens: int) -> int:
    """``R``: the number of draws for ``keep_ratio`` of ``num_tokens``
    original (non-prefix) tokens, at least 1."""
    check_keep_ratio(keep_ratio)
    return max(1, int(round(keep_ratio * num_tokens)))


def check_keep_ratio(keep_ratio: float) -> None:
    if not isinstance(keep_ratio, (int, float)) or not 0 < keep_ratio <= 1:
        raise ValueError(f'keep_ratio must be a number in (0, 1], got '
                         f'{keep_ratio!r}')


def _lifted(x: Tensor, pos_feat: Optional[Tensor], feature_map: str):
    """``phi(x)`` in fp32, lifted by the position features when there are
    any: (B, H, N, D) -> (B, H, N, F)."""
    phi = feature_map_fn(x.float(), feature_map)
    return phi if pos_feat is None else lift_features(phi, pos_feat)


def _query_attention_rows(query, key, key_mask, kernel, scale, query_feat,
                          key_feat, feature_map, eps):
    """Normalised attention rows of ``query`` (B, H, Nq, D) over ``key``
    (B, H, Nk, D): (B, H, Nq, Nk); for a single score query, O(Nk D)."""
    valid = key_mask[:, None, None, :]  # (B, 1, 1, Nk)
    if kernel == 'softmax':
        logits = (query.float() @ key.float().transpose(-2, -1)) * scale
        logits = logits.masked_fill(~valid, float('-inf'))
        return logits.softmax(-1)
    phi_q = _lifted(query, query_feat, feature_map)
    phi_k = _lifted(key, key_feat, feature_map)
    sims = phi_q @ phi_k.transpose(-2, -1)  # (B, H, Nq, Nk)
    sims = torch.where(valid, sims, torch.zeros((), device=sims.device))
    # The rule of the attention itself (and of the fused E-Attention op):
    # a row of negative similarities ('identity', Ours-B) keeps its sign.
    return sims / safe_denominator(sims.sum(-1, keepdim=True), eps)


def _received_attention_linear(q, k, key_mask, query_mask, query_feat,
                               key_feat, feature_map, eps):
    """Attention that each key receives from all valid queries under the
    linear kernel, per head, in O((Nq + Nk) D): ``sum_i a_ij = k~_j . w``
    with ``w = sum_i q~_i / (q~_i . z)`` and ``z = sum_j k~_j`` (the rows
    of eq. 3-5 summed without forming them): (B, H, Nk)."""
    phi_q = _lifted(q, query_feat, feature_map)  # (B, H, Nq, F)
    phi_k = _lifted(k, key_feat, feature_map)  # (B, H, Nk, F)
    zero = torch.zeros((), device=k.device)
    phi_k = torch.where(key_mask[:, None, :, None], phi_k, zero)
    z = phi_k.sum(2, keepdim=True)  # (B, H, 1, F)
    den = safe_denominator((phi_q * z).sum(-1, keepdim=True), eps)
    weights = torch.where(query_mask[:, None, :, None], phi_q / den, zero)
    return phi_k @ weights.sum(2).unsqueeze(-1)  # (B, H, Nk, 1)


def _received_attention_softmax(q, k, key_mask, query_mask, scale,
                                chunk: int = 1024):
    """Softmax attention that each key receives from all valid queries,
    per head: (B, H, Nk), in chunks of ``chunk`` queries, which bound the
    (chunk x Nk) similarity matrices (O(N^2) time)."""
    batch, heads, num_q, _ = q.shape
    received = torch.zeros(batch, heads, k.shape[2], device=k.device)
    zero = torch.zeros((), device=k.device)
    for start in range(0, num_q, chunk):
        stop = min(num_q, start + chunk)
        rows = _query_attention_rows(q[:, :, start:stop], k, key_mask,
                                     'softmax', scale, None, None, 'elu1',
                                     0.)  # (B, H, chunk, Nk)
        valid = query_mask[:, None, start:stop, None]
        received += torch.where(valid, rows, zero).sum(2)
    return received


def cls_attention_scores(
        q_cls: Tensor,
        k: Tensor,
        v: Optional[Tensor] = None,
        q: Optional[Tensor] = None,
        kernel: str = 'linear',
        score: str = 'cls',
        key_mask: Optional[Tensor] = None,
        query_mask: Optional[Tensor] = None,
        num_prefix_tokens: int = 1,
        q_cls_pos: Optional[Union[int, Tensor]] = 0,
        q_pos: Optional[Tensor] = None,
        k_pos: Optional[Tensor] = None,
        seq_len: Optional[int] = None,
        feature_map: str = 'elu1',
        pos_weight: Optional[str] = '1d',
        grid_size: Optional[Sequence[int]] = None,
        scale: Optional[float] = None,
        eps: float = 1e-6,
        generator: Optional[torch.Generator] = None,
        validate: bool = True) -> Tensor:
    """Importance of each non-prefix token, eq. (3-10):
    ``h_j = a_0j / sum_{i >= P} a_0i``, ``a_0`` being the attention row of the
    CLS query, computed per head, summed over heads (section 3.3.2).

    The row costs O(Nk D) in both kernels: for ``'linear'`` it is the CLS row
    of eq. (3-5), ``a_0j = q~_0 . k~_j / sum_i q~_0 . k~_i``, which is what
    lets E-Attention score tokens without an N x N matrix (section 3.4); for
    ``'softmax'`` it is ``softmax(q_0 K^T * scale)``.

    Args:
        q_cls (Tensor): (B, H, D) or (B, H, 1, D) the score query: the CLS
            token's query, or for a model without CLS (Swin) the mean query.
        k (Tensor): (B, H, Nk, D) keys; the first ``num_prefix_tokens`` are
            prefix tokens (CLS, ...), which get no score.
        v (Tensor | None): (B, H, Nk, Dv) values, needed for ``'cls_v'``.
        q (Tensor | None): (B, H, Nq, D) all queries, needed for ``'all'``.
        kernel (str): ``'linear'`` or ``'softmax'``.
        score (str): ``'cls'`` (eq. 3-10), ``'cls_v'`` (times ``||v_j||`` per
            head, as ATS), ``'all'`` (mean attention that a token receives
            from all valid queries, fig. 3-5; O(N) time and memory for the
            linear kernel, O(N^2) time in chunks of 1024 queries for
            softmax) or ``'random'`` (uniform random scores, drawn with
            ``generator``: pass a seeded one where results must repeat).
        key_mask (Tensor | None): (B, Nk) bool, True for real tokens.
        query_mask (Tensor | None): (B, Nq) bool for ``q`` in ``'all'``.
        num_prefix_tokens (int): P, the leading tokens excluded from scores.
        q_cls_pos (int | Tensor | None): original index of the score query
            for the linear kernel's cos re-weighting (0 for CLS); ``None``
            scores without re-weighting (a mean query has no position).
        q_pos, k_pos, seq_len, feature_map, pos_weight, grid_size: as in
            :func:`~mmceformer.ops.linear_attention`.
        scale (float | None): softmax logit scale, default ``D ** -0.5``.
        validate (bool): check positions (a host sync), as in
            :func:`~mmceformer.ops.linear_attention`.

    Each head's row is normalised by its sum with the sign-keeping bound
    of the attention itself (:func:`safe_denominator`), as the fused
    :func:`~mmceformer.ops.e_attention` does.

    Scores only choose indices, which have no gradient: they are computed
    from detached inputs and never hold an autograd graph (for
    ``'all'`` that graph would be O(N^2) per layer in softmax mode).

    Returns:
        Tensor: (B, Nk - P) float32 scores, zero on masked tokens, each row
        summing to 1 over its valid tokens (all zero if it has none); no
        gradient.
    """
    check_choice('kernel', kernel, KERNELS)
    check_choice('score', score, SCORES)
    check_choice('feature_map', feature_map, FEATURE_MAPS)
    check_choice('pos_weight', pos_weight, POS_WEIGHTS)
    if k.dim() != 4:
        raise ValueError(f'k must be (B, H, Nk, D), got {tuple(k.shape)}')
    batch, heads, num_k, dim = k.shape
    if q_cls.dim() == 3:
        q_cls = q_cls.unsqueeze(2)
    if q_cls.shape != (batch, heads, 1, dim):
        raise ValueError(f'q_cls must be (B={batch}, H={heads}, D={dim}), '
                         f'got {tuple(q_cls.shape)}')
    if not 0 <= num_prefix_tokens <= num_k:
        raise ValueError(f'num_prefix_tokens must be in [0, {num_k}], got '
                         f'{num_prefix_tokens}')
    if key_mask is None:
        key_mask = torch.ones(batch, num_k, dtype=torch.bool, device=k.device)
    elif key_mask.shape != (batch, num_k) or key_mask.dtype != torch.bool:
        raise ValueError(f'key_mask must be a bool tensor of shape '
                         f'({batch}, {num_k}), got {tuple(key_mask.shape)}')
    scale = dim**-0.5 if scale is None else scale
    seq_len = num_k if seq_len is None else seq_len
    use_pos = kernel == 'linear' and pos_weight is not None
    k_feat = None
    if use_pos:
        _, k_feat = _features(k_pos, num_k, batch, 'k_pos', seq_len,
                              pos_weight, grid_size, k.device, validate)
    image_mask = key_mask[:, num_prefix_tokens:]

    # Detached rather than under no_grad(): torch 2.1's dynamo breaks on a
    # no_grad context inside a compiled region.
    q_cls, k = q_cls.detach(), k.detach()
    v = None if v is None else v.detach()
    q = None if q is None else q.detach()
    with autocast_disabled(k.device):
        if score == 'random':
            per_token = torch.rand(
                image_mask.shape,
                generator=generator,
                device=k.device if generator is None else generator.device)
            per_token = per_token.to(k.device)
        elif score == 'all':
            if q is None:
                raise ValueError("score='all' needs the queries q")
            num_q = q.shape[2]
            if query_mask is None:
                query_mask = torch.ones(
                    batch, num_q, dtype=torch.bool, device=q.device)
            q_feat = None
            if use_pos:
                q_feat, _ = _features(q_pos, num_q, batch, 'q_pos', seq_len,
                                      pos_weight, grid_size, q.device,
                                      validate)
            if kernel == 'linear':
                received = _received_attention_linear(
                    q, k, key_mask, query_mask, q_feat, k_feat, feature_map,
                    eps)[..., 0]  # (B, H, Nk)
            else:
                received = _received_attention_softmax(
                    q, k, key_mask, query_mask, scale)
            per_token = received.sum(1)[:, num_prefix_tokens:]
        else:
            q_feat = None
            if use_pos and q_cls_pos is not None:
                pos = torch.as_tensor(q_cls_pos, device=k.device).long()
                q_feat, _ = _features(
                    pos.reshape(-1, 1), 1, batch, 'q_cls_pos', seq_len,
                    pos_weight, grid_size, k.device, validate)
            key_feat = None if q_feat is None else k_feat
            row = _query_attention_rows(q_cls, k, key_mask, kernel, scale,
                                        q_feat, key_feat, feature_map,
                                        eps)[:, :, 0]  # (B, H, Nk)
            if score == 'cls_v':
                if v is None:
                    raise ValueError("score='cls_v' needs the values v")
                row = row * v.float().norm(dim=-1)
            per_token = row.sum(1)[:, num_prefix_tokens:]  # (B, Nk - P)
        # A negative similarity (identity feature map, "Ours-B") is no
        # importance at all.
        per_token = per_token.clamp(min=0)
        per_token = torch.where(image_mask, per_token,
                                torch.zeros((), device=k.device))
        total = per_token.sum(-1, keepdim=True)
        return per_token / total.clamp(min=torch.finfo(total.dtype).tiny)


def grid_inverse_cdf(probs: Tensor,
                     num_samples: int,
                     offset: Union[float, Tensor] = 0.5) -> Tensor:
    """Eq. (3-13) at the shifted grid ``u_k = (k + U) / R``, for all k at
    once, without ``searchsorted`` (which ONNX lacks) in O(N + R). The
    evaluation grid is ``U = 1/2``; training's systematic draws take one
    uniform ``U`` in [0, 1) per image (:func:`systematic_inverse_cdf`).

    With ``CDF_j`` the unnormalised CDF and ``T`` its total, slot k takes
    the first token whose CDF exceeds ``u_k T``: ``index_k = #{j : CDF_j <=
    u_k T}``. The grid points below a value ``c`` are the first
    ``G(c) = clamp(ceil(c R / T - U), 0, R)`` ones, so ``CDF_j <= u_k T``
    iff ``G(CDF_j) <= k``, and ``index_k`` is the count of tokens with
    ``G(CDF_j) <= k``: a histogram of ``G`` (scatter-add) and its cumulative
    sum. A token with zero probability has the ``G`` of its predecessor, so
    it is never a slot's first token exceeding ``u_k T``.

    Args:
        probs (Tensor): (B, N) non-negative, each row with a positive sum.
        num_samples (int): R.
        offset (float | Tensor): U in [0, 1), a number or (B, 1) per row.

    Returns:
        Tensor: (B, R) long token indices, non-decreasing along R.
    """
    batch, num = probs.shape
    # fp64: exact for integer-valued scores, so ties (a draw on a CDF
    # value) resolve as in exact arithmetic, the same on every device.
    cdf = probs.double().cumsum(-1)  # (B, N)
    total = cdf[:, -1:].clamp(min=torch.finfo(cdf.dtype).tiny)
    if isinstance(offset, Tensor):
        offset = offset.double()
    below = torch.ceil(cdf * num_samples / total - offset)
    below = below.clamp(0, num_samples).long()  # G(CDF_j), (B, N)
    hist = torch.zeros(
        batch, num_samples + 1, dtype=torch.long, device=probs.device)
    hist = hist.scatter_add(1, below, torch.ones_like(below))
    return hist.cumsum(-1)[:, :num_samples]  # (B, R)


def systematic_inverse_cdf(probs: Tensor, num_samples: int,
                           generator: Optional[torch.Generator]) -> Tensor:
    """Eq. (3-13) at systematic random draws (training): ``u_k = (k + U) /
    R`` with one uniform ``U`` per image. Every ``u_k`` is uniform on its
    stratum and their union on [0, 1), as the thesis's random sampling
    asks, but the draws never crowd together: the number of distinct
    tokens kept is the evaluation grid's (``U = 1/2``) up to the rounding
    at stratum edges, and a token whose share of the score is at least
    ``1/R`` is always kept. (B, N) -> (B, R) long, non-decreasing."""
    batch = probs.shape[0]
    device = probs.device
    offset = torch.rand(
        batch,
        1,
        generator=generator,
        device=device if generator is None else generator.device)
    return grid_inverse_cdf(probs, num_samples, offset.to(device))


def random_inverse_cdf(probs: Tensor, num_samples: int,
                       generator: Optional[torch.Generator]) -> Tensor:
    """Eq. (3-13) at R independent, sorted uniform draws (training with
    ``train_draws='independent'``): (B, N) -> (B, R) long, non-decreasing,
    never a zero-probability token. Independent draws collide: on flat
    scores they keep about ``1 - 1/e`` of the distinct tokens that the
    evaluation grid keeps, fewer after every pruning block."""
    batch, num = probs.shape
    device = probs.device
    cdf = probs.cumsum(-1)
    u = torch.rand(
        batch,
        num_samples,
        generator=generator,
        device=device if generator is None else generator.device).to(device)
    u = u.sort(-1).values
    index = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)  # (B, R)
    # Round-off may push u * total onto the last CDF value: take the last
    # token with non-zero probability, never a padded one.
    positions = torch.arange(num, device=device).expand(batch, num)
    last = torch.where(probs > 0, positions,
                       torch.full_like(positions, -1)).max(-1).values
    return torch.minimum(index, last[:, None].clamp(min=0))


def sample_tokens(
        scores: Tensor,
        num_samples: int,
        valid: Optional[Tensor] = None,
        select: str = 'inverse_cdf',
        deterministic: bool = True,
        generator: Optional[torch.Generator] = None,
        static: Optional[bool] = None,
        validate: bool = True,
        train_draws: str = 'systematic') -> Tuple[Tensor, Tensor]:
    """Choose the tokens to keep from their scores (section 3.3.3).

    ``'inverse_cdf'``: with ``CDF_i = sum_{j <= i} h_j`` (eq. 3-12), draw R
    numbers ``u`` in [0, 1) and keep ``CDF^-1(u)`` (eq. 3-13), the first token
    whose CDF exceeds ``u``. The draws are the fixed grid ``u_k = (k + 0.5) /
    R`` when ``deterministic`` (evaluation), so inference is reproducible and
    an image's choice depends on its scores only, and random in training
    (``train_draws``): systematic ``u_k = (k + U) / R`` by default, which
    keeps as many distinct tokens as the grid, so a model trains on the
    token budget it is evaluated with. Tokens drawn twice collapse, so
    ``r' <= R`` tokens are kept, adaptively per image. ``'topk'`` keeps the
    R best (fig. 3-6 baseline).

    Two layouts of the same kept set:

    * static: R slots per image (``min(R, N)`` for top-k) in spatial order;
      a token drawn k times fills k neighbouring slots, and all but the
      first are masked, as are slots past an image's valid tokens. Shapes
      do not depend on the scores and nothing is read back to Python: what
      ONNX export, ``torch.compile`` and GPUs need.
    * compact: duplicates removed, rows padded to ``R'``, the largest
      distinct count in the batch (one host sync): fewer rows for the
      layers after a ``drop``.

    Args:
        scores (Tensor): (B, N) non-negative scores (need not sum to 1).
            A row whose valid scores are all zero is sampled uniformly.
        num_samples (int): R >= 1, the number of draws.
        valid (Tensor | None): (B, N) bool; invalid tokens are never kept.
        select (str): ``'inverse_cdf'`` or ``'topk'``.
        deterministic (bool): grid draws instead of random ones.
        generator (torch.Generator | None): for the random draws.
        train_draws (str): the random draws, one of ``TRAIN_DRAWS``:
            ``'systematic'`` (one uniform offset per image) or
            ``'independent'`` (R independent uniforms, which collide).
        static (bool | None): the static layout (True), the compact one
            (False) or, by default, static while tracing or compiling
            (:func:`is_tracing`) and compact in eager mode.
        validate (bool): check that the scores are non-negative (a host
            sync, skipped while tracing); False for scores that are by
            construction.

    Returns:
        tuple[Tensor, Tensor]: ``index`` (B, K) long indices into N in
        increasing (spatial) order, 0 on padding, and ``mask`` (B, K) bool,
        True for kept tokens (each once); K = R (static) or R' (compact).
    """
    check_choice('select', select, SELECTS)
    check_choice('train_draws', train_draws, TRAIN_DRAWS)
    if scores.dim() != 2:
        raise ValueError(f'scores must be (B, N), got {tuple(scores.shape)}')
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f'num_samples must be an int >= 1, got '
                         f'{num_samples!r}')
    tracing = is_tracing()
    static = tracing if static is None else static
    batch, num = scores.shape
    device = scores.device
    if valid is None:
        valid = torch.ones(batch, num, dtype=torch.bool, device=device)
    elif valid.shape != scores.shape or valid.dtype != torch.bool:
        raise ValueError(f'valid must be a bool tensor of shape '
                         f'{tuple(scores.shape)}, got {tuple(valid.shape)}')
    if validate and not tracing and (scores < 0).any():  # eager only
        raise ValueError('scores must be non-negative')
    probs = torch.where(valid, scores.float(), torch.zeros((), device=device))
    empty_rows = probs.sum(-1, keepdim=True) <= 0
    probs = torch.where(empty_rows, valid.float(), probs)
    num_valid = valid.sum(-1)  # (B,)

    if select == 'topk':
        count = min(num_samples, num)
        masked = probs.masked_fill(~valid, float('-inf'))
        index = masked.topk(count, dim=-1).indices  # (B, R)
        mask = torch.arange(count, device=device)[None] < num_valid[:, None]
        # Real entries first, in spatial order; padding after them.
        index = torch.where(mask, index, torch.full_like(index, num))
        index = index.sort(-1).values
        mask = index < num
    else:
        if deterministic:
            index = grid_inverse_cdf(probs, num_samples)
        elif train_draws == 'systematic':
            index = systematic_inverse_cdf(probs, num_samples, generator)
        else:
            index = random_inverse_cdf(probs, num_samples, generator)
        # Slots are sorted, so duplicates are neighbours: keep the first.
        first = torch.cat([
            torch.ones_like(index[:, :1], dtype=torch.bool),
            index[:, 1:] != index[:, :-1]
        ], 1)
        mask = first & (num_valid > 0)[:, None]
        if not static:  # distinct tokens first, in order
            order = torch.where(mask, index, index + num + 1).argsort(-1)
            index, mask = index.gather(1, order), mask.gather(1, order)
    if not static:
        width = int(mask.sum(-1).max()) if batch else 0  # the host sync
        index, mask = index[:, :width], mask[:, :width]
    return index.masked_fill(~mask, 0), mask
