"""Cos-reweighted linear attention (thesis section 3.2), in O(N).

Pure torch, no OpenMMLab import. Notation (one head):

* ``phi``: the non-negative feature map, eq. (3-7): ``elu(x) + 1``
  (``feature_map='elu1'``), or the identity, eq. (3-20) (``'identity'``,
  the thesis's "Ours-B" of table 3-2).
* ``w(i, j)``: the position re-weighting, eq. (3-8):
  ``sin(pi (i + n - j) / 2n) = cos(pi (p_i - p_j) / 2M)`` with ``p`` the
  ORIGINAL index of a token and ``M`` the original sequence length, so the
  locality bias survives pruning.
* ``S(i, j) = phi(q_i) . phi(k_j) * w(i, j)`` and, eq. (3-5),
  ``out_i = sum_j S(i, j) v_j / sum_j S(i, j)``. The denominator is
  required; eq. (3-9) leaves it out by mistake (SPEC 2.1).

Every re-weighting used here factorises as ``w(i, j) = a_i . b_j`` with
small per-token *position features* ``a`` (query side) and ``b`` (key side),
which is what makes the O(N) form of eq. (3-9)/(3-14) possible:
``out_i = (phi(q_i) (x) a_i) . KV / (phi(q_i) (x) a_i) . z`` with
``KV = sum_j (phi(k_j) (x) b_j)^T v_j`` and ``z = sum_j phi(k_j) (x) b_j``.
"""
import contextlib
import math
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

FEATURE_MAPS = ('elu1', 'identity')
POS_WEIGHTS = (None, '1d', '2d')


def check_choice(name, value, allowed):
    """ValueError naming the option and its allowed values."""
    if value not in allowed:
        raise ValueError(f'{name} must be one of {allowed}, got {value!r}')


def is_tracing() -> bool:
    """Whether this call is being traced or compiled (``torch.onnx.export``,
    ``torch.jit.trace``, ``torch.compile``/``torch.export``): shapes must
    then not depend on tensor values, and nothing may read a value back to
    Python (each read is a host sync on a GPU, and a constant in a graph)."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    compiler = getattr(torch, 'compiler', None)
    if compiler is not None and hasattr(compiler, 'is_compiling'):
        return compiler.is_compiling()
    return torch._dynamo.is_compiling()  # torch < 2.3


def autocast_disabled(device: torch.device):
    """A context with autocast off on ``device``'s type, for the fp32
    reductions (SPEC 2.1). A device type that this torch has no autocast
    for (e.g. MPS on torch 2.1, where asking raises) cannot have it on, so
    there is nothing to turn off."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:
        return contextlib.nullcontext()


def feature_map_fn(x: Tensor, feature_map: str = 'elu1') -> Tensor:
    """The non-negative map ``phi`` of eq. (3-7) (``'elu1'``: x + 1 for
    x >= 0, e^x otherwise) or eq. (3-20) (``'identity'``)."""
    check_choice('feature_map', feature_map, FEATURE_MAPS)
    if feature_map == 'elu1':
        # == F.elu(x) + 1, at less than half its cost on the CPU, as
        # r + e^(x - r) with r = max(x, 0). The in-place steps write into
        # the two temporaries made here, whose backward needs only x or
        # their own result: two new tensors, not four (each large new
        # tensor costs glibc's allocator page faults, docs/benchmarks.md).
        # threshold's gradient is 0 at x = 0, x - r's is 1, so the
        # derivative there is elu's, 1 (clamps pass 0 on both sides).
        positive = torch.nn.functional.threshold(x, 0., 0.)
        return positive.add_((x - positive).exp_())
    return x


def _normalise_positions(pos: Optional[Tensor], n: int, batch: int, name: str,
                         device) -> Tensor:
    """Positions as a (1, n) (shared) or (B, n) long tensor; ``None`` means
    ``arange(n)``."""
    if pos is None:
        return torch.arange(n, device=device).unsqueeze(0)
    if pos.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f'{name} must be an integer tensor, got {pos.dtype}')
    if pos.dim() == 1:
        pos = pos.unsqueeze(0)
    if pos.dim() != 2 or pos.shape[-1] != n or pos.shape[0] not in (1, batch):
        raise ValueError(f'{name} must have shape ({n},) or ({batch}, {n}), '
                         f'got {tuple(pos.shape)}')
    return pos.long()


def _features(pos,
              num,
              batch,
              name,
              seq_len,
              pos_weight,
              grid_size,
              device,
              validate=True):
    """Validated positions -> (query features, key features), (1|B, N, P).

    ``None`` stands for ``arange(num)``. Its features are computed at each
    call, never cached: a cached tensor made under one context (inference
    mode, a fake tensor of ``torch.export``, a tracer) would be returned
    under another, and an ONNX trace would bake it in as a constant. They
    cost an arange and a few cos/sin of N elements."""
    if pos is None:
        if pos_weight is not None and num > seq_len:
            raise ValueError(f'{name} must lie in [0, seq_len={seq_len}), got '
                             f'{num} default positions')
        pos = torch.arange(num, device=device).unsqueeze(0)
        return position_features(pos, seq_len, pos_weight, grid_size)
    pos = _normalise_positions(pos, num, batch, name, device)
    if validate and pos.numel() and not is_tracing():  # eager value check
        low, high = (int(v) for v in pos.aminmax())  # one device sync
        if low < 0 or high >= seq_len:
            raise ValueError(
                f'{name} must lie in [0, seq_len={seq_len}), got values in '
                f'[{low}, {high}]; pass the original sequence length as '
                'seq_len')
    return position_features(pos, seq_len, pos_weight, grid_size)


def position_features(
        pos: Tensor,
        seq_len: int,
        pos_weight: Optional[str] = '1d',
        grid_size: Optional[Sequence[int]] = None) -> Tuple[Tensor, Tensor]:
    """Query-side and key-side position features with ``w(i,j) = a_i . b_j``.

    Args:
        pos (Tensor): (B, N) long, original token indices in ``[0, seq_len)``.
        seq_len (int): ``M``, the original sequence length.
        pos_weight (str | None):
            * ``None``: ``w = 1`` (thesis "Ours-A", eq. 3-18); features
              (B, N, 1).
            * ``'1d'``: eq. (3-8) on the raster index, ``theta = pi p / 2M``,
              ``a = b = [cos theta, sin theta]``; features (B, N, 2).
            * ``'2d'``: separable over the ``grid_size=(Hg, Wg)`` raster,
              ``w = cos(pi dr / 2Hg) cos(pi dc / 2Wg)``. The first
              ``seq_len - Hg*Wg`` indices are prefix tokens (CLS, distillation
              token) that lie *outside* the grid: their weight with every
              token is 1 (a global token has no locality), while grid token
              ``p`` sits at row ``(p - P) // Wg``, column ``(p - P) % Wg``.
              With ``g`` = 1 for grid tokens and 0 for prefix tokens and
              ``T`` the 4 products of row/column cos/sin, the identity
              ``w = g_i g_j T_i.T_j + (1 - g_i) + g_i (1 - g_j)`` gives
              ``a = [g T, 1 - g, g]`` and ``b = [g T, 1, 1 - g]``, (B, N, 6);
              without prefix tokens ``a = b = T``, (B, N, 4).
        grid_size (tuple[int, int] | None): (Hg, Wg), required for ``'2d'``.

    Returns:
        tuple[Tensor, Tensor]: ``a`` and ``b``, float32, (B, N, P) each.
    """
    check_choice('pos_weight', pos_weight, POS_WEIGHTS)
    if pos_weight is None:
        ones = torch.ones(*pos.shape, 1, device=pos.device)
        return ones, ones
    if pos_weight == '1d':
        theta = pos.float() * (math.pi / (2 * seq_len))
        feats = torch.stack([theta.cos(), theta.sin()], dim=-1)  # (B, N, 2)
        return feats, feats
    if grid_size is None or len(grid_size) != 2:
        raise ValueError("pos_weight='2d' needs grid_size=(H, W), got "
                         f'{grid_size!r}')
    grid_h, grid_w = int(grid_size[0]), int(grid_size[1])
    num_prefix = seq_len - grid_h * grid_w
    if num_prefix < 0:
        raise ValueError(f'seq_len ({seq_len}) must be at least '
                         f'grid_size[0] * grid_size[1] ({grid_h * grid_w}) '
                         "for pos_weight='2d'")
    in_grid = pos >= num_prefix
    cell = (pos - num_prefix).clamp(min=0)  # prefix tokens are masked below
    row_angle = (cell // grid_w).float() * (math.pi / (2 * grid_h))
    col_angle = (cell % grid_w).float() * (math.pi / (2 * grid_w))
    row = torch.stack([row_angle.cos(), row_angle.sin()], dim=-1)
    col = torch.stack([col_angle.cos(), col_angle.sin()], dim=-1)
    trig = (row.unsqueeze(-1) * col.unsqueeze(-2)).flatten(-2)  # (B, N, 4)
    if num_prefix == 0:
        return trig, trig
    g = in_grid.float().unsqueeze(-1)  # (B, N, 1)
    query_feats = torch.cat([g * trig, 1 - g, g], dim=-1)  # (B, N, 6)
    key_feats = torch.cat([g * trig, torch.ones_like(g), 1 - g], dim=-1)
    return query_feats, key_feats


def lift_features(phi: Tensor, pos_feat: Tensor) -> Tensor:
    """``phi (x) a``: (B, H, N, D) and (B, N, P) -> (B, H, N, P * D), so that
    ``lift(phi_q, a) . lift(phi_k, b) = phi_q . phi_k * w`` (eq. 3-9)."""
    batch, heads, num, _ = phi.shape
    lifted = phi.unsqueeze(-2) * pos_feat[:, None, :, :, None]  # B,H,N,P,D
    return lifted.reshape(batch, heads, num, -1)


def _prepare(q,
             k,
             v,
             q_pos,
             k_pos,
             seq_len,
             key_mask,
             feature_map,
             pos_weight,
             grid_size,
             q_group=None,
             k_group=None,
             num_groups=None,
             validate=True):
    """Validate arguments; return fp32 q, k, v, position features, the
    valid-key count, the (B, 1, Nk, 1) key mask and the groups
    (``(q_group, k_group, num_groups)`` or None; the O(N) order lifts them
    into the features with :func:`lift_groups`, the quadratic order masks
    the pairs with :func:`same_group`)."""
    check_choice('feature_map', feature_map, FEATURE_MAPS)
    check_choice('pos_weight', pos_weight, POS_WEIGHTS)
    for name, t in (('q', q), ('k', k), ('v', v)):
        if t.dim() != 4:
            raise ValueError(f'{name} must be (B, H, N, D), got shape '
                             f'{tuple(t.shape)}')
    batch, heads, _, dim = q.shape
    if k.shape[:2] != (batch, heads) or k.shape[-1] != dim:
        raise ValueError(f'k must be (B={batch}, H={heads}, Nk, D={dim}), '
                         f'got {tuple(k.shape)}')
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f'v must be (B, H, Nk={k.shape[2]}, Dv), got '
                         f'{tuple(v.shape)}')
    num_q, num_k = q.shape[2], k.shape[2]
    if seq_len is None:
        seq_len = num_k
    seq_len = int(seq_len)
    if seq_len < 1:
        raise ValueError(f'seq_len must be >= 1, got {seq_len}')
    q_feat, _ = _features(q_pos, num_q, batch, 'q_pos', seq_len, pos_weight,
                          grid_size, q.device, validate)
    _, k_feat = _features(k_pos, num_k, batch, 'k_pos', seq_len, pos_weight,
                          grid_size, q.device, validate)
    if (q_group is None) != (k_group is None):
        raise ValueError('q_group and k_group must be given together')
    if q_group is not None:
        q_group = _normalise_positions(q_group, num_q, batch, 'q_group',
                                       q.device)
        k_group = _normalise_positions(k_group, num_k, batch, 'k_group',
                                       q.device)
        if num_groups is None:  # a host sync; give it when known
            num_groups = int(max(q_group.max(), k_group.max())) + 1
        groups = (q_group, k_group, num_groups)
    else:
        groups = None
    # Reductions in fp32 (or fp64) whatever the autocast dtype (SPEC 2.1).
    dtype = accumulation_dtype(q.dtype)
    v_acc = v.to(dtype)
    valid = None
    if key_mask is None:
        num_valid = float(num_k)
    else:
        if key_mask.shape != (batch, num_k) or key_mask.dtype != torch.bool:
            raise ValueError(f'key_mask must be a bool tensor of shape '
                             f'({batch}, {num_k}), got {key_mask.dtype} '
                             f'{tuple(key_mask.shape)}')
        valid = key_mask[:, None, :, None]  # (B, 1, Nk, 1)
        v_acc = _zero_where_invalid(v_acc, valid)
        num_valid = key_mask.sum(-1).clamp(min=1).to(dtype)[:, None, None,
                                                            None]
    return (q.to(dtype), k.to(dtype), v_acc, q_feat.to(dtype),
            k_feat.to(dtype), num_valid, valid, groups)


def num_features(k_feat: Tensor, groups) -> int:
    """Features per token of the O(N) order: position features times
    groups (what :func:`lift_groups` makes)."""
    return k_feat.shape[-1] * (1 if groups is None else groups[2])


def lift_groups(q_feat: Tensor, k_feat: Tensor, groups):
    """The O(N) order's form of the groups: features ``a (x) onehot(g)``
    (:func:`group_features`); unchanged without groups."""
    if groups is None:
        return q_feat, k_feat
    q_group, k_group, num_groups = groups
    return (group_features(q_feat, q_group, num_groups),
            group_features(k_feat, k_group, num_groups))


def same_group(groups, q_index: Optional[Tensor] = None) -> Optional[Tensor]:
    """The quadratic order's form of the groups: ``[g_i == g_j]`` as a
    (B, Nq, Nk) bool pair mask (None without groups), for the queries
    ``q_index`` (B, Nq') when given. As exact as the lifted features and
    cheaper: no one-hot features, and the position weights stay shared."""
    if groups is None:
        return None
    q_group, k_group, _ = groups
    if q_index is not None:
        q_group = q_group.expand(q_index.shape[0], -1).gather(1, q_index)
    return q_group[:, :, None] == k_group[:, None, :]


def _zero_where_invalid(x: Tensor, valid: Optional[Tensor]) -> Tensor:
    """torch.where, not a product: padded garbage may be inf or nan."""
    if valid is None:
        return x
    return torch.where(valid, x, torch.zeros((),
                                             dtype=x.dtype,
                                             device=x.device))


def _phi_keys(k, valid, feature_map):
    """``phi(k)``: (B, H, n, D), 0 on masked keys."""
    return _zero_where_invalid(feature_map_fn(k, feature_map), valid)


def _key_features(k, k_feat, valid, feature_map):
    """k~ of eq. (3-9): (B, H, n, D) -> (B, H, n, P * D), 0 on masked keys."""
    return lift_features(_phi_keys(k, valid, feature_map), k_feat)


def _bound_denominator(denominator, feature_map, eps):
    """``|den| >= eps`` (a float, or a tensor that broadcasts to ``den``):
    with ``'elu1'`` similarities are positive, so a clamp; otherwise
    :func:`safe_denominator` keeps the sign."""
    if feature_map == 'elu1':
        return denominator.clamp(min=eps)
    return safe_denominator(denominator, eps)


def group_features(pos_feat: Tensor, group: Tensor, num_groups: int) -> Tensor:
    """Restrict the weight to pairs of one group:
    ``[g_i == g_j] = onehot(g_i) . onehot(g_j)`` factorises too, so the
    features become ``a (x) onehot(g)``: (B, N, P) -> (B, N, P * G)."""
    onehot = torch.nn.functional.one_hot(group, num_groups).to(pos_feat)
    return (pos_feat.unsqueeze(-1) * onehot.unsqueeze(-2)).flatten(-2)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 stays fp64 (gradcheck); everything else is reduced in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def safe_denominator(den: Tensor, eps) -> Tensor:
    """Keep ``|den| >= eps`` (a float, or a tensor that broadcasts to
    ``den``) with its sign. With ``'elu1'`` every
    denominator is positive; with ``'identity'`` (Ours-B) a row of
    negative similarities is still a weighted mean, so the sign is kept."""
    return torch.where(den >= 0, den.clamp(min=eps), den.clamp(max=-eps))


def _accumulate_keys(k_acc,
                     v_acc,
                     k_feat,
                     valid,
                     num_valid,
                     feature_map,
                     chunk_size,
                     score_tilde=None):
    """The key pass of eq. (3-9): ``KV = mean_j k~_j^T v_j`` (B, H, PD, Dv)
    and ``z = mean_j k~_j`` (B, H, PD, 1), side by side as ``[KV, z]``
    (B, H, PD, Dv + 1), and, with a lifted score query
    ``score_tilde`` (B, H, 1, PD), its similarity to every key (B, H, Nk):
    the CLS row of section 3.4 at no extra pass over the keys.

    Chunks over tokens bound the temporaries (k~ is P times the size of k),
    which also keeps them in cache and out of the page-fault path of large
    allocations; the sums are unchanged."""
    kvz = 0
    rows = []
    for s in range(0, k_acc.shape[2], chunk_size):
        e = s + chunk_size
        k_tilde = _key_features(k_acc[:, :, s:e], k_feat[:, s:e],
                                None if valid is None else valid[:, :, s:e],
                                feature_map)  # (B, H, n, P * D)
        # KV and z in one product: z is KV's column for values of 1 (the
        # ones column replaces the copy that matmul makes of a strided V)
        kvz = kvz + k_tilde.transpose(-2, -1) @ with_ones(v_acc[:, :, s:e])
        if score_tilde is not None:
            rows.append((k_tilde @ score_tilde.transpose(-2, -1))[..., 0])
    # Means, not sums: finite in fp16/bf16 at 10^4+ tokens.
    kvz = kvz / num_valid  # (B, H, P * D, Dv + 1)
    score_rows = torch.cat(rows, dim=2) if rows else None
    return kvz, score_rows


def with_ones(x: Tensor) -> Tensor:
    """(..., Dv) -> (..., Dv + 1), a last column of ones: one product with
    it gives both ``S V`` and the row sums ``S 1`` of eq. (3-5), in one pass
    over ``S`` instead of two."""
    return torch.cat([x, x.new_ones(x.shape[:-1] + (1, ))], dim=-1)


def _apply_queries(q_acc, q_feat, kvz, feature_map, eps, chunk_size):
    """The query pass: ``out_i = q~_i KV / q~_i z`` for (B, H, Nq, D)
    queries and ``kvz = [KV, z]`` (B, H, PD, Dv + 1) of the key pass."""
    outs = []
    for s in range(0, q_acc.shape[2], chunk_size):
        e = s + chunk_size
        q_tilde = lift_features(
            feature_map_fn(q_acc[:, :, s:e], feature_map),
            q_feat[:, s:e])  # (B, H, n, P * D)
        # numerator and denominator in one pass over q~: (B, H, n, Dv + 1)
        out = q_tilde @ kvz
        denominator = _bound_denominator(out[..., -1:], feature_map, eps)
        outs.append(out[..., :-1] / denominator)  # (B, H, n, Dv)
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


#: The quadratic form is taken while its MACs are at most this many times
#: the linear form's: it runs as three large matmuls instead of a dozen
#: small ops (lift, chunked reductions), which pays off for few tokens
#: (Swin windows). Measured on 2 CPU threads with tools/
#: benchmark_attention.py --crossover (docs/benchmarks.md): the quadratic
#: form was 1.2x faster at a MAC ratio of 1.13 (N=144) and even at 1.55
#: (N=197), 1.7x slower at 2.02 (N=256).
QUADRATIC_COST_RATIO = 1.5


def prefer_quadratic(num_q: int, num_k: int, dim: int, dim_v: int,
                     num_feats: int) -> bool:
    """Whether to evaluate the linear attention in its O(Nq Nk) form:
    ``S = (phi(Q) phi(K)^T) o (A B^T)``, ``out = S V / S 1`` (the same
    numbers as eq. 3-9's O(N) form, in another order). Decided from the
    shapes only, so a traced or compiled graph takes one branch.

    Args:
        num_q, num_k (int): query and key counts.
        dim, dim_v (int): per-head query/key and value widths.
        num_feats (int): position features P (times groups) per token.
    """
    linear = (num_q + num_k) * num_feats * dim * (dim_v + 1)
    quadratic = num_q * num_k * (dim + num_feats + dim_v + 1)
    return quadratic <= QUADRATIC_COST_RATIO * linear


def _quadratic_queries(q_acc,
                       q_feat,
                       phi_k,
                       k_feat,
                       v_acc,
                       num_valid,
                       feature_map,
                       eps,
                       pair_mask=None):
    """The O(Nq Nk) form of the query pass: ``out_i = sum_j S(i,j) v_j /
    sum_j S(i,j)`` with ``S = (phi(q) phi(k)^T) o (a b^T)``, the
    denominator bounded as the O(N) form bounds its mean over the valid
    keys.

    Args:
        q_acc (Tensor): (B, H, Nq, D) queries.
        q_feat (Tensor): (1|B, Nq, F) query-side position features.
        phi_k (Tensor): (B, H, Nk, D) ``phi(k)``, 0 on masked keys.
        k_feat (Tensor): (1|B, Nk, F) key-side position features.
        v_acc (Tensor): (B, H, Nk, Dv) values, 0 on masked keys.
        num_valid (float | Tensor): valid keys, scalar or (B, 1, 1, 1).
        pair_mask (Tensor | None): (B, Nq, Nk) bool, False on pairs that
            must not interact (:func:`same_group`).

    Returns:
        Tensor: (B, H, Nq, Dv).
    """
    sims = quadratic_similarities(q_acc, q_feat, phi_k, k_feat, feature_map,
                                  pair_mask)  # (B, H, Nq, Nk)
    out = sims @ with_ones(v_acc)  # S V and S 1: (B, H, Nq, Dv + 1)
    # The O(N) form bounds the mean over the valid keys by eps; bounding
    # the sum by eps * count is the same (the bound is homogeneous), and
    # the means' division cancels.
    denominator = _bound_denominator(out[..., -1:], feature_map,
                                     eps * num_valid)
    return out[..., :-1] / denominator


def quadratic_similarities(q_acc,
                           q_feat,
                           phi_k,
                           k_feat,
                           feature_map,
                           pair_mask=None):
    """``S(i, j) = phi(q_i) . phi(k_j) * a_i . b_j`` of eq. (3-5), explicitly:
    (B, H, Nq, D) queries, (1|B, Nq, F) and (1|B, Nk, F) position features
    and (B, H, Nk, D) ``phi(k)`` -> (B, H, Nq, Nk); 0 where the (B, Nq, Nk)
    ``pair_mask`` is False."""
    weight = q_feat @ k_feat.transpose(-2, -1)  # (1|B, Nq, Nk)
    if pair_mask is not None:
        weight = weight * pair_mask.to(weight.dtype)  # (B, Nq, Nk)
    sims = feature_map_fn(q_acc, feature_map) @ phi_k.transpose(-2, -1)
    # in place: the product's backward needs its inputs, not its output,
    # and the weights (positions, groups) need no gradient
    return sims.mul_(weight.unsqueeze(1))


def linear_attention(q: Tensor,
                     k: Tensor,
                     v: Tensor,
                     q_pos: Optional[Tensor] = None,
                     k_pos: Optional[Tensor] = None,
                     seq_len: Optional[int] = None,
                     key_mask: Optional[Tensor] = None,
                     feature_map: str = 'elu1',
                     pos_weight: Optional[str] = '1d',
                     grid_size: Optional[Sequence[int]] = None,
                     eps: float = 1e-6,
                     q_group: Optional[Tensor] = None,
                     k_group: Optional[Tensor] = None,
                     num_groups: Optional[int] = None,
                     chunk_size: int = 1024,
                     validate: bool = True) -> Tensor:
    """Linear attention with cos re-weighting, eq. (3-5) with (3-7)/(3-8),
    computed as eq. (3-9) (and, for a query subset, eq. 3-14) in O(N), or,
    for few tokens, in the O(Nq Nk) order of the same products
    (:func:`prefer_quadratic` decides from the shapes).

    Args:
        q (Tensor): (B, H, Nq, D) queries; may be a pruned subset of tokens.
        k (Tensor): (B, H, Nk, D) keys.
        v (Tensor): (B, H, Nk, Dv) values.
        q_pos (Tensor | None): (Nq,) or (B, Nq) original indices of the
            queries; default ``arange(Nq)``.
        k_pos (Tensor | None): (Nk,) or (B, Nk) original indices of the keys;
            default ``arange(Nk)``.
        seq_len (int | None): ``M``, the original sequence length of the
            re-weighting; default Nk. Every position must be below it.
        key_mask (Tensor | None): (B, Nk) bool, True for real keys. Masked
            keys contribute exactly nothing, whatever their values.
        feature_map (str): ``'elu1'`` (eq. 3-7) or ``'identity'`` (eq. 3-20).
        pos_weight (str | None): ``'1d'``, ``'2d'`` or ``None``; see
            :func:`position_features`.
        grid_size (tuple[int, int] | None): token grid (Hg, Wg) for ``'2d'``.
        eps (float): lower bound of the denominator. Sums are taken as means
            over the valid keys (the ratio is unchanged) so that half
            precision never overflows; ``eps`` bounds the magnitude of that
            mean, keeping its sign (see :func:`safe_denominator`).
        q_group (Tensor | None): (Nq,) or (B, Nq) long group ids; with
            ``k_group`` (Nk,) or (B, Nk), only pairs of one group interact
            (``S(i, j) = 0`` otherwise): the linear form of a block-diagonal
            attention mask, e.g. Swin's shifted-window regions.
        k_group (Tensor | None): see ``q_group``.
        num_groups (int | None): a bound on the group ids (ids lie in
            ``[0, num_groups)``); default: read from the ids, one host sync
            and a value-dependent shape, so give it when it is known.
        chunk_size (int): tokens per chunk of the two O(N) passes; bounds
            the temporary memory, not the result.
        validate (bool): check that positions lie in ``[0, seq_len)`` (a
            host sync, skipped while tracing); callers whose positions are
            valid by construction (the backbones) pass False.

    Returns:
        Tensor: (B, H, Nq, Dv), in the dtype of ``q``.
    """
    with autocast_disabled(q.device):
        (q_acc, k_acc, v_acc, q_feat, k_feat, num_valid, valid,
         groups) = _prepare(q, k, v, q_pos, k_pos, seq_len, key_mask,
                            feature_map, pos_weight, grid_size, q_group,
                            k_group, num_groups, validate)
        if prefer_quadratic(q.shape[2], k.shape[2], q.shape[-1],
                            v.shape[-1], num_features(k_feat, groups)):
            phi_k = _phi_keys(k_acc, valid, feature_map)
            out = _quadratic_queries(q_acc, q_feat, phi_k, k_feat, v_acc,
                                     num_valid, feature_map, eps,
                                     same_group(groups))
        else:
            q_feat, k_feat = lift_groups(q_feat, k_feat, groups)
            kvz, _ = _accumulate_keys(k_acc, v_acc, k_feat, valid,
                                      num_valid, feature_map, chunk_size)
            out = _apply_queries(q_acc, q_feat, kvz, feature_map, eps,
                                 chunk_size)
    return out.to(q.dtype)


def linear_attention_reference(q: Tensor,
                               k: Tensor,
                               v: Tensor,
                               q_pos: Optional[Tensor] = None,
                               k_pos: Optional[Tensor] = None,
                               seq_len: Optional[int] = None,
                               key_mask: Optional[Tensor] = None,
                               feature_map: str = 'elu1',
                               pos_weight: Optional[str] = '1d',
                               grid_size: Optional[Sequence[int]] = None,
                               eps: float = 1e-6,
                               q_group: Optional[Tensor] = None,
                               k_group: Optional[Tensor] = None) -> Tensor:
    """O(Nq * Nk) reference of :func:`linear_attention` (same arguments):
    builds ``S(i, j)`` of eq. (3-5) explicitly. The position weights come
    straight from the cosines, not from :func:`position_features`, so the
    factorisation itself is under test. For tests only."""
    with autocast_disabled(q.device):
        q_acc, k_acc, v_acc, _, _, num_valid, valid, _ = _prepare(
            q, k, v, q_pos, k_pos, seq_len, key_mask, feature_map, pos_weight,
            grid_size, q_group, k_group)
        phi_q = feature_map_fn(q_acc, feature_map)
        phi_k = _phi_keys(k_acc, valid, feature_map)
        batch = q.shape[0]
        num_q, num_k = q.shape[2], k.shape[2]
        if seq_len is None:
            seq_len = num_k
        qp = _normalise_positions(q_pos, num_q, batch, 'q_pos', q.device)
        kp = _normalise_positions(k_pos, num_k, batch, 'k_pos', q.device)
        qp, kp = qp[:, :, None].double(), kp[:, None, :].double()
        if pos_weight is None:
            weight = torch.ones(batch, num_q, num_k, dtype=torch.float64)
        elif pos_weight == '1d':
            weight = torch.cos(math.pi * (qp - kp) / (2 * seq_len))
        else:
            grid_h, grid_w = grid_size
            num_prefix = seq_len - grid_h * grid_w
            cq, ck = qp - num_prefix, kp - num_prefix
            d_row = torch.div(cq, grid_w, rounding_mode='floor') - \
                torch.div(ck, grid_w, rounding_mode='floor')
            d_col = torch.remainder(cq, grid_w) - torch.remainder(ck, grid_w)
            weight = torch.cos(math.pi * d_row / (2 * grid_h)) * \
                torch.cos(math.pi * d_col / (2 * grid_w))
            outside = (qp < num_prefix) | (kp < num_prefix)
            weight = torch.where(outside, torch.ones_like(weight), weight)
        if q_group is not None:
            qg = _normalise_positions(q_group, num_q, batch, 'q_group',
                                      q.device)
            kg = _normalise_positions(k_group, num_k, batch, 'k_group',
                                      q.device)
            weight = weight * (qg[:, :, None] == kg[:, None, :]).to(weight)
        weight = weight.to(phi_q.device, phi_q.dtype)[:, None]  # (B,1,Nq,Nk)
        scores = (phi_q @ phi_k.transpose(-2, -1)) * weight  # (B,H,Nq,Nk)
        scores = scores / num_valid  # masked keys are already zero in phi_k
        out = (scores @ v_acc) / safe_denominator(
            scores.sum(-1, keepdim=True), eps)
    return out.to(q.dtype)
