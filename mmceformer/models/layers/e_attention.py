"""E-Attention (thesis section 3.4): one multi-head attention module for the
four rows of tables 3-4/3-5/3-6, used by DeiT, Swin and CEFormer alike.

``attn_mode``:

* ``'softmax'``: scaled dot-product attention (eq. 3-2), via
  ``F.scaled_dot_product_attention``;
* ``'linear'``: cos-reweighted linear attention (eq. 3-9), O(N);
* ``'prune'``: softmax attention plus parameter-free token sampling
  (section 3.3) on the layers built with ``prune_tokens=True``;
* ``'eattn'``: linear attention whose CLS row scores the tokens (eq. 3-14):
  only the kept queries are computed, ``KV`` and ``z`` still cover all keys.

The math lives in :mod:`mmceformer.ops`; this module holds the parameters
(named ``qkv`` and ``proj`` as in mmpretrain's ``MultiheadAttention``, so DeiT
weights load unchanged) and threads positions and masks through.
"""
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from mmceformer.ops import (FEATURE_MAPS, POS_WEIGHTS, SCORES, SELECTS,
                            TRAIN_DRAWS, check_choice, check_keep_ratio,
                            cls_attention_scores, e_attention, gather_tokens,
                            grid_to_tokens, linear_attention, num_kept_tokens,
                            sample_tokens, tokens_to_grid, with_prefix)

ATTN_MODES = ('softmax', 'linear', 'prune', 'eattn')
PRUNE_MODES = ('drop', 'skip')


class EAttentionOutput(NamedTuple):
    """What an :class:`EAttention` call returns.

    Attributes:
        x (Tensor): (B, Nq, C) attention outputs (after ``proj``); Nq = N when
            the layer did not sample, else P + R' (prefix + kept tokens).
        index (Tensor | None): (B, Nq) long, which input token each output row
            belongs to (prefix tokens first, the rest in spatial order);
            None when every token was kept.
        mask (Tensor | None): (B, Nq) bool, False on padding rows (kept
            counts differ per image); None when every token was kept.
    """
    x: Tensor
    index: Optional[Tensor] = None
    mask: Optional[Tensor] = None


class EAttention(BaseModule):
    """Multi-head attention with linear kernel and token sampling options.

    Args:
        embed_dims (int): C, channels of the input and output tokens.
        num_heads (int): H; ``C`` must divide by it.
        qkv_bias (bool): bias of the ``qkv`` projection. Default True.
        qk_scale (float | None): softmax logit scale; default ``(C/H)^-0.5``.
        attn_drop (float): dropout on softmax attention weights; the linear
            kernel has no weight matrix, so it must be 0 in linear modes.
        proj_drop (float): dropout after ``proj``.
        attn_mode (str): one of ``ATTN_MODES``, see the module docstring.
        prune_tokens (bool): whether this layer samples tokens (only in
            ``'prune'``/``'eattn'`` modes; the backbone's ``prune_layers``).
        keep_ratio (float): in (0, 1]; R = ``keep_ratio`` x the ORIGINAL
            number of non-prefix tokens is the number of draws.
        score (str): token score, one of ``SCORES`` (SPEC 2.2).
        select (str): ``'inverse_cdf'`` (thesis) or ``'topk'``.
        train_draws (str): the random draws of ``'inverse_cdf'`` in training
            (evaluation takes the grid ``u_k = (k + 1/2) / R``):
            ``'systematic'`` (default, ``u_k = (k + U) / R``, one uniform
            offset per image: as many distinct tokens as the grid keeps)
            or ``'independent'`` (R independent uniforms, which collide and
            keep fewer tokens in training than in evaluation).
        eval_seed (int): seed of the scores of ``score='random'`` in
            evaluation, so that evaluation repeats (training draws from
            torch's global generator); backbones give each layer its own.
        prune_mode (str): ``'drop'`` (pruned tokens leave the sequence, for
            classification) or ``'skip'`` (they skip the block, for dense
            outputs). The attention itself is the same; the block reads it.
        feature_map (str): ``'elu1'`` or ``'identity'`` (linear kernel).
        pos_weight (str | None): ``'1d'``, ``'2d'`` or None (linear kernel).
        num_prefix_tokens (int): P leading tokens that are always kept and
            get no score (1 for CLS; 0 for Swin, which scores with the mean
            query instead).
        value_conv (bool): CEFormer's C1 (thesis section 4.3.3): add a
            depthwise 3x3 convolution of V over the token grid to the
            attention output of the image tokens, before ``proj``. Eq. (4-3)
            adds a weight ``w_ij`` that depends only on the offset ``i - j``
            to the features of the similarity; the part of
            ``(x_i' + w_ij)(x_j' + w_ij) x_j`` that depends on the offset
            alone is ``sum_j w_ij^2 x_j`` over neighbours: a depthwise
            convolution of the values with a learned, input-independent
            kernel (translation invariant). The cross terms
            ``w_ij (x_i' + x_j')`` would need a kernel per query and are
            dropped, so this is the translation-invariant part only (SPEC 3).
            The prefix tokens have no cell and get no such term.
        static_shapes (bool | None): layout of the kept tokens (see
            :func:`~mmceformer.ops.sample_tokens`): None = static R slots
            while tracing or compiling, compacted in eager mode (one host
            sync per pruning layer); True = always static.
        init_cfg (dict | None): mmengine initialisation config.

    Positions passed to :meth:`forward` are not range-checked (that would
    be a host sync per layer): they must lie in ``[0, seq_len)``, as the
    backbones' are by construction.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 qk_scale: Optional[float] = None,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 attn_mode: str = 'softmax',
                 prune_tokens: bool = False,
                 keep_ratio: float = 0.7,
                 score: str = 'cls',
                 select: str = 'inverse_cdf',
                 prune_mode: str = 'drop',
                 feature_map: str = 'elu1',
                 pos_weight: Optional[str] = '1d',
                 num_prefix_tokens: int = 1,
                 eps: float = 1e-6,
                 value_conv: bool = False,
                 static_shapes: Optional[bool] = None,
                 train_draws: str = 'systematic',
                 eval_seed: int = 0,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        check_choice('attn_mode', attn_mode, ATTN_MODES)
        check_choice('score', score, SCORES)
        check_choice('select', select, SELECTS)
        check_choice('prune_mode', prune_mode, PRUNE_MODES)
        check_choice('train_draws', train_draws, TRAIN_DRAWS)
        check_choice('feature_map', feature_map, FEATURE_MAPS)
        check_choice('pos_weight', pos_weight, POS_WEIGHTS)
        check_keep_ratio(keep_ratio)
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible '
                             f'by num_heads ({num_heads})')
        if attn_mode in ('linear', 'eattn') and attn_drop > 0:
            raise ValueError(f'attn_drop must be 0 with attn_mode='
                             f"'{attn_mode}' (the linear kernel has no "
                             f'attention matrix to drop), got {attn_drop}')
        if num_prefix_tokens < 0:
            raise ValueError('num_prefix_tokens must be >= 0, got '
                             f'{num_prefix_tokens}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.scale = qk_scale or self.head_dims**-0.5
        self.attn_mode = attn_mode
        self.prune_tokens = prune_tokens and attn_mode in ('prune', 'eattn')
        self.keep_ratio = keep_ratio
        self.score = score
        self.select = select
        self.prune_mode = prune_mode
        self.feature_map = feature_map
        self.pos_weight = pos_weight
        self.num_prefix_tokens = num_prefix_tokens
        self.eps = eps
        self.static_shapes = static_shapes
        self.train_draws = train_draws
        self.eval_seed = int(eval_seed)

        # The module tree of mmpretrain's MultiheadAttention, in its order,
        # so that code written against it (and optimizer states, which
        # follow the parameter order) works on this module too.
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)
        # Drop path and layer scale after ``proj``, as MultiheadAttention's
        # ``out_drop`` and ``gamma1``; a backbone may replace them, or set
        # them to None where its own layers apply them.
        self.out_drop = nn.Identity()
        self.gamma1 = nn.Identity()
        self.value_conv = nn.Conv2d(
            embed_dims, embed_dims, 3, padding=1,
            groups=embed_dims) if value_conv else None

    @property
    def fused(self) -> bool:
        """Whether this layer runs the one-pass E-Attention op: a pruning
        layer with the linear kernel, CLS scores and a CLS token."""
        return (self.prune_tokens and self.kernel == 'linear'
                and self.score == 'cls' and self.num_prefix_tokens >= 1)

    @property
    def attn_drop_rate(self) -> float:
        """Dropout on softmax weights: ``attn_drop`` is a float here, as in
        MultiheadAttention, and an ``nn.Dropout`` in Swin's window
        attention, as in WindowMSA."""
        drop = self.attn_drop
        return drop.p if isinstance(drop, nn.Dropout) else float(drop)

    @property
    def kernel(self) -> str:
        return 'linear' if self.attn_mode in ('linear', 'eattn') else 'softmax'

    def extra_repr(self) -> str:
        return (f'attn_mode={self.attn_mode!r}, prune_tokens='
                f'{self.prune_tokens}, keep_ratio={self.keep_ratio}, '
                f'prune_mode={self.prune_mode!r}')

    def forward(self,
                x: Tensor,
                pos: Optional[Tensor] = None,
                seq_len: Optional[int] = None,
                grid_size: Optional[Sequence[int]] = None,
                token_mask: Optional[Tensor] = None,
                attn_bias: Optional[Tensor] = None,
                token_group: Optional[Tensor] = None,
                num_groups: Optional[int] = None,
                sample_mask: Optional[Tensor] = None) -> EAttentionOutput:
        """
        Args:
            x (Tensor): (B, N, C) tokens, prefix tokens first.
            pos (Tensor | None): (N,) or (B, N) long, original index of each
                token (after earlier pruning in ``drop`` mode); default
                ``arange(N)``.
            seq_len (int | None): original sequence length M (prefix
                included); default N.
            grid_size (tuple[int, int] | None): original token grid, needed
                by ``pos_weight='2d'``.
            token_mask (Tensor | None): (B, N) bool, False on padding tokens.
            attn_bias (Tensor | None): (B or 1, H, N, N) additive logits for
                the softmax kernel (Swin's relative position bias and shift
                mask). The linear kernel cannot take one (SPEC 2.4): passing
                it in a linear mode is an error.
            token_group (Tensor | None): (B, N) long group ids for the
                linear kernel: only tokens of one group attend to each other
                (the linear form of Swin's shifted-window mask).
            num_groups (int | None): bound on the ``token_group`` ids
                (default: read from them, a host sync).
            sample_mask (Tensor | None): (B, N) bool, the tokens that may be
                drawn and that form the mean score query (no prefix); default
                ``token_mask``. Swin's padded window cells are keys of the
                attention (as in mmpretrain) but not candidates.

        Returns:
            EAttentionOutput: outputs, and which tokens they belong to.
        """
        batch, num, channels = x.shape
        if channels != self.embed_dims:
            raise ValueError(f'x must be (B, N, {self.embed_dims}), got '
                             f'{tuple(x.shape)}')
        if attn_bias is not None and self.kernel == 'linear':
            raise ValueError(f"attn_bias is not defined for attn_mode="
                             f"'{self.attn_mode}' (linear kernel); pass None")
        if token_group is not None and self.kernel == 'softmax':
            raise ValueError(f"token_group is for the linear kernel; with "
                             f"attn_mode='{self.attn_mode}' pass an attn_bias")
        # int(): while tracing, sizes are 0-dim tensors; R is static anyway
        seq_len = int(num if seq_len is None else seq_len)
        # Kernels take pos=None as arange(N) (shared (1, N) position
        # features, no validation sync); the explicit (B, N) positions are
        # built only where tokens are picked.
        all_pos = torch.arange(num, device=x.device) if pos is None else pos
        all_pos = all_pos.expand(batch, num)
        # (B, N, 3C) -> (3, B, H, N, C/H)
        qkv = self.qkv(x).reshape(batch, num, 3, self.num_heads,
                                  self.head_dims).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]

        index = mask = None
        q_pos = pos
        q_mask = token_mask
        if self.fused:
            # E-Attention in one pass over the keys (eq. 3-14)
            out, index, mask = e_attention(
                q,
                k,
                v,
                num_kept_tokens(self.keep_ratio,
                                seq_len - self.num_prefix_tokens),
                num_prefix_tokens=self.num_prefix_tokens,
                pos=pos,
                seq_len=seq_len,
                token_mask=token_mask,
                feature_map=self.feature_map,
                pos_weight=self.pos_weight,
                grid_size=grid_size,
                token_group=token_group,
                num_groups=num_groups,
                select=self.select,
                deterministic=not self.training,
                train_draws=self.train_draws,
                eps=self.eps,
                static=self.static_shapes,
                validate=False)
            q_pos, q_mask = gather_tokens(all_pos, index), mask
        else:
            if self.prune_tokens:
                index, mask = self._sample(
                    q, k, v, pos, seq_len, grid_size, token_mask,
                    token_mask if sample_mask is None else sample_mask)
                # (B, H, N, D) -> (B, H, P + R', D): kept queries only
                q = gather_tokens(q.transpose(1, 2), index).transpose(1, 2)
                q_pos, q_mask = gather_tokens(all_pos, index), mask
                if attn_bias is not None:
                    attn_bias = attn_bias.expand(batch, -1, -1, -1).gather(
                        2, index[:, None, :,
                                 None].expand(-1, attn_bias.shape[1], -1,
                                              attn_bias.shape[-1]))
            if self.kernel == 'linear':
                q_group = token_group
                if token_group is not None and index is not None:
                    q_group = gather_tokens(token_group, index)
                out = linear_attention(
                    q,
                    k,
                    v,
                    q_pos=q_pos,
                    k_pos=pos,
                    seq_len=seq_len,
                    key_mask=token_mask,
                    feature_map=self.feature_map,
                    pos_weight=self.pos_weight,
                    grid_size=grid_size,
                    eps=self.eps,
                    q_group=q_group,
                    k_group=token_group,
                    num_groups=num_groups,
                    validate=False)
            else:
                out = self._softmax(q, k, v, token_mask, attn_bias)
        # (B, H, Nq, D) -> (B, Nq, C)
        out = out.transpose(1, 2).reshape(batch, -1, self.embed_dims)
        if self.value_conv is not None:
            out = self._add_value_conv(out, v, all_pos, token_mask,
                                       all_pos if q_pos is None else q_pos,
                                       q_mask, grid_size)
        out = self.proj_drop(self.proj(out))
        for post in (self.gamma1, self.out_drop):  # MultiheadAttention order
            if post is not None:
                out = post(out)
        return EAttentionOutput(out, index, mask)

    def _add_value_conv(self, out, v, pos, token_mask, q_pos, q_mask,
                        grid_size):
        """out (B, Nq, C) + DWConv3x3(V) read at the queries' cells."""
        if grid_size is None:
            raise ValueError('value_conv (C1) needs grid_size=(H, W)')
        batch, _, num, _ = v.shape
        prefix = self.num_prefix_tokens
        # (B, H, N, D) -> (B, N, C) -> (B, C, Hg, Wg)
        v_tokens = v.transpose(1, 2).reshape(batch, num, self.embed_dims)
        grid = tokens_to_grid(v_tokens, pos, token_mask, prefix, grid_size)
        local = grid_to_tokens(self.value_conv(grid), q_pos, q_mask, prefix)
        return torch.cat([out[:, :prefix], out[:, prefix:] + local], dim=1)

    def _softmax(self, q, k, v, token_mask, attn_bias):
        mask = attn_bias
        if token_mask is not None:
            keep = token_mask[:, None, None, :]  # (B, 1, 1, Nk)
            if mask is None:
                mask = keep
            else:
                mask = mask.masked_fill(~keep, float('-inf'))
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)
        # SDPA's own scale is D^-0.5; another one is folded into q rather
        # than passed as ``scale=`` (torch 2.1's ONNX exporter fails on it).
        if self.scale != self.head_dims**-0.5:
            q = q * (self.scale * self.head_dims**0.5)
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.attn_drop_rate if self.training else 0.)

    def _sample(self, q, k, v, pos, seq_len, grid_size, token_mask,
                sample_mask):
        """Score the tokens from the CLS (or mean) query's attention row and
        draw the kept set among ``sample_mask``; returns index and mask,
        (B, P + R') each. Nothing here is differentiable (indices; the
        scores are computed from detached inputs)."""
        prefix = self.num_prefix_tokens
        if prefix:
            q_score = q[:, :, 0]
            q_score_pos = 0 if pos is None else pos[..., 0]
        else:  # Swin: the mean query plays the CLS role (SPEC 2.4)
            if sample_mask is None:
                q_score = q.mean(2)
            else:
                weights = sample_mask[:, None, :, None].to(q.dtype)
                q_score = (q * weights).sum(2) / weights.sum(2).clamp(min=1)
            q_score_pos = None
        generator = None
        if self.score == 'random' and not self.training:
            generator = torch.Generator(q.device).manual_seed(self.eval_seed)
        scores = cls_attention_scores(
            q_score,
            k,
            v,
            q=q,
            kernel=self.kernel,
            score=self.score,
            key_mask=token_mask,
            query_mask=sample_mask,
            num_prefix_tokens=prefix,
            q_cls_pos=q_score_pos,
            q_pos=pos,
            k_pos=pos,
            seq_len=seq_len,
            feature_map=self.feature_map,
            pos_weight=self.pos_weight,
            grid_size=grid_size,
            scale=self.scale,
            eps=self.eps,
            generator=generator,
            validate=False)  # (B, N - P), no gradient
        num_draws = num_kept_tokens(self.keep_ratio, seq_len - prefix)
        valid = None if sample_mask is None else sample_mask[:, prefix:]
        kept, kept_mask = sample_tokens(
            scores,
            num_draws,
            valid,
            select=self.select,
            deterministic=not self.training,
            static=self.static_shapes,
            validate=False,
            train_draws=self.train_draws)  # (B, R') each; scores >= 0
        index, mask = with_prefix(kept, kept_mask, prefix)  # (B, P + R')
        return index, mask
