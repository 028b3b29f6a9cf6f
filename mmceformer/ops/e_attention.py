"""E-Attention fused in one pass over the keys (thesis section 3.4).

Pure torch, no OpenMMLab import.
"""
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .linear_attention import (_accumulate_keys, _apply_queries, _phi_keys,
                               _prepare, _quadratic_queries,
                               autocast_disabled, feature_map_fn,
                               lift_features, lift_groups, num_features,
                               prefer_quadratic, quadratic_similarities,
                               safe_denominator, same_group)
from .token_sampling import sample_tokens
from .tokens import gather_tokens, with_prefix


def e_attention(q: Tensor,
                k: Tensor,
                v: Tensor,
                num_samples: int,
                num_prefix_tokens: int = 1,
                pos: Optional[Tensor] = None,
                seq_len: Optional[int] = None,
                token_mask: Optional[Tensor] = None,
                feature_map: str = 'elu1',
                pos_weight: Optional[str] = '1d',
                grid_size: Optional[Sequence[int]] = None,
                token_group: Optional[Tensor] = None,
                num_groups: Optional[int] = None,
                select: str = 'inverse_cdf',
                deterministic: bool = True,
                generator: Optional[torch.Generator] = None,
                train_draws: str = 'systematic',
                eps: float = 1e-6,
                chunk_size: int = 1024,
                static: Optional[bool] = None,
                validate: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    """E-Attention, eq. (3-14): linear self-attention (eq. 3-9) whose CLS
    row scores the tokens (eq. 3-10), inverse-CDF sampling keeps r' <= R of
    them (eq. 3-12, 3-13), and only the kept queries are computed.

    The fusion of section 3.4: one pass over the keys accumulates ``KV``,
    ``z`` and the CLS row ``q~_0 . k~_j`` together, so scoring costs one
    extra product per key and no second pass; ``KV`` and ``z`` still cover
    all keys. Equal to :func:`linear_attention` on the kept queries with the
    scores of :func:`cls_attention_scores` (``score='cls'``) and
    :func:`sample_tokens` (tested).

    Args:
        q, k (Tensor): (B, H, N, D) queries and keys of the same N tokens,
            the ``num_prefix_tokens`` prefix tokens (CLS first) in front.
        v (Tensor): (B, H, N, Dv).
        num_samples (int): R, the number of draws.
        num_prefix_tokens (int): P >= 1; the first token's query scores.
        pos (Tensor | None): (N,) or (B, N) original indices; default arange.
        seq_len (int | None): original sequence length M; default N.
        token_mask (Tensor | None): (B, N) bool, False on padding.
        feature_map, pos_weight, grid_size: as in :func:`linear_attention`.
        token_group (Tensor | None): (B, N) group ids, as ``q_group`` and
            ``k_group`` of :func:`linear_attention`.
        num_groups (int | None): bound on the group ids, as in
            :func:`linear_attention`.
        select, deterministic, generator, train_draws: as in
            :func:`sample_tokens`.
        eps (float): denominator bound.
        chunk_size (int): tokens per chunk of the O(N) passes.
        static (bool | None): layout of the kept tokens, as in
            :func:`sample_tokens`.
        validate (bool): check positions (a host sync), as in
            :func:`linear_attention`.

    Returns:
        tuple[Tensor, Tensor, Tensor]: outputs (B, H, P + R', Dv) in the
        dtype of ``q``, ``index`` (B, P + R') of the tokens they belong to
        (prefix first, the rest in spatial order) and ``mask`` (B, P + R'),
        False on padding rows.
    """
    if num_prefix_tokens < 1:
        raise ValueError('e_attention scores with the first (CLS) query: '
                         f'num_prefix_tokens must be >= 1, got '
                         f'{num_prefix_tokens}')
    if q.shape[2] != k.shape[2]:
        raise ValueError(f'e_attention is self-attention: q and k must have '
                         f'the same N, got {q.shape[2]} and {k.shape[2]}')
    prefix = num_prefix_tokens
    with autocast_disabled(q.device):
        (q_acc, k_acc, v_acc, q_feat, k_feat, num_valid, valid,
         groups) = _prepare(q, k, v, pos, pos, seq_len, token_mask,
                            feature_map, pos_weight, grid_size, token_group,
                            token_group, num_groups, validate)
        batch, _, num, _ = q_acc.shape
        quadratic = prefer_quadratic(num_samples + prefix, num,
                                     q.shape[-1], v.shape[-1],
                                     num_features(k_feat, groups))
        if quadratic:
            phi_k = _phi_keys(k_acc, valid, feature_map)  # (B, H, N, D)
            # S(0, j) = phi(q_0) . phi(k_j) * a_0 . b_j: (B, H, N)
            cls_pairs = None  # (B, 1, N): pairs of the CLS query
            if groups is not None:
                cls_pairs = same_group(
                    groups, torch.zeros(batch, 1, dtype=torch.long,
                                        device=q.device))
            rows = quadratic_similarities(q_acc[:, :, :1], q_feat[:, :1],
                                          phi_k, k_feat, feature_map,
                                          cls_pairs)
            rows = rows[:, :, 0]
        else:
            q_feat, k_feat = lift_groups(q_feat, k_feat, groups)
            # q~_0: (B, H, 1, D) -> (B, H, 1, P * D)
            score_tilde = lift_features(
                feature_map_fn(q_acc[:, :, :1], feature_map), q_feat[:, :1])
            kvz, rows = _accumulate_keys(k_acc, v_acc, k_feat, valid,
                                         num_valid, feature_map, chunk_size,
                                         score_tilde)  # rows: (B, H, N)
        # eq. (3-5) row of the CLS query per head, summed over heads; it
        # only picks indices, so no graph is kept for it
        rows = rows.detach()
        attn = rows / safe_denominator(rows.sum(-1, keepdim=True), eps)
        scores = attn.sum(1)[:, prefix:]  # (B, N - P), eq. (3-10)
        valid_image = None if token_mask is None else token_mask[:, prefix:]
        if valid_image is not None:
            scores = torch.where(valid_image, scores,
                                 torch.zeros((), device=scores.device))
        kept, kept_mask = sample_tokens(
            scores.clamp(min=0),
            num_samples,
            valid_image,
            select=select,
            deterministic=deterministic,
            generator=generator,
            static=static,
            validate=False,
            train_draws=train_draws)  # (B, R'); scores >= 0 by construction
        index, mask = with_prefix(kept, kept_mask, prefix)  # (B, P + R')
        # (B, H, N, D) -> (B, H, P + R', D); features (1|B, N, F) likewise
        q_kept = gather_tokens(q_acc.transpose(1, 2), index).transpose(1, 2)
        feat_kept = gather_tokens(q_feat.expand(batch, num, -1), index)
        if quadratic:
            out = _quadratic_queries(q_kept, feat_kept, phi_k, k_feat, v_acc,
                                     num_valid, feature_map, eps,
                                     same_group(groups, index))
        else:
            out = _apply_queries(q_kept, feat_kept, kvz, feature_map, eps,
                                 chunk_size)
    return out.to(q.dtype), index, mask
