"""The residual block around :class:`EAttention` with the two pruning
semantics of SPEC 2.2, shared by the DeiT and CEFormer backbones."""
from typing import Callable, NamedTuple, Optional, Sequence

import torch
from torch import Tensor, nn

from mmceformer.ops import gather_tokens, scatter_tokens
from .e_attention import EAttention


class Tokens(NamedTuple):
    """A (possibly pruned, padded) token sequence.

    Attributes:
        x (Tensor): (B, N, C) tokens, prefix tokens first.
        pos (Tensor): (B, N) long, each token's index in the ORIGINAL
            sequence (prefix tokens included), which the cos re-weighting and
            the convolutions on the token grid need after pruning.
        mask (Tensor | None): (B, N) bool, False on padding; None = all real.
        processed (Tensor | None): (B,) long, image tokens that the last
            block updated (fewer than the sequence in ``skip`` mode), for
            token statistics and FLOP accounting.
    """
    x: Tensor
    pos: Tensor
    mask: Optional[Tensor] = None
    processed: Optional[Tensor] = None

    @classmethod
    def full(cls, x: Tensor) -> 'Tokens':
        batch, num, _ = x.shape
        pos = torch.arange(num, device=x.device).expand(batch, num)
        return cls(x, pos, None)


def attention_block(tokens: Tokens,
                    attn: EAttention,
                    norm: nn.Module,
                    drop_path: Optional[nn.Module],
                    ffn_residual: Callable[[Tokens, Optional[Tokens]], Tensor],
                    seq_len: int,
                    grid_size: Optional[Sequence[int]] = None,
                    attn_bias: Optional[Tensor] = None,
                    ffn_context: bool = False) -> Tokens:
    """``x <- x + DropPath(attn(norm(x)))``, then ``x <- ffn_residual(x)``.

    When ``attn`` samples tokens, only the kept ones go through this block:

    * ``attn.prune_mode == 'drop'``: the kept tokens are the new sequence
      (classification; later blocks never see the pruned ones);
    * ``'skip'``: the pruned tokens pass unchanged (identity) and stay in the
      sequence, so the output is always the full grid (dense prediction).

    Args:
        tokens (Tokens): input sequence, (B, N, C).
        attn (EAttention): the attention of this block.
        norm (nn.Module): pre-attention norm.
        drop_path (nn.Module | None): stochastic depth on the attention
            branch; None where ``attn`` applies it itself (its
            ``out_drop``, as mmpretrain's MultiheadAttention does).
        ffn_residual (callable): ``(kept, context) -> x + FFN(x)`` for the
            (kept) tokens, (B, N', C). It gets :class:`Tokens` so that a
            convolutional FFN can place them on the grid; ``context`` is the
            full sequence in ``skip`` mode if ``ffn_context`` (pruned
            tokens are still there for the convolution to see, as keys are
            for the attention), else None.
        seq_len (int): original sequence length M (prefix included).
        grid_size (tuple[int, int] | None): original token grid (Hg, Wg).
        attn_bias (Tensor | None): additive softmax logits, see EAttention.
        ffn_context (bool): whether ``ffn_residual`` reads ``context`` in
            ``skip`` mode; a token-wise FFN does not, and the full sequence
            is then not assembled for it.

    Returns:
        Tokens: (B, N', C) with N' = N unless pruned tokens were dropped.
    """
    # A full, unpruned sequence is in raster order: pos=None lets the kernel
    # use shared (1, N) position features and skip validating positions.
    full = tokens.mask is None and tokens.x.shape[1] == seq_len
    out = attn(
        norm(tokens.x),
        pos=None if full else tokens.pos,
        seq_len=seq_len,
        grid_size=grid_size,
        token_mask=tokens.mask,
        attn_bias=attn_bias)
    prefix = attn.num_prefix_tokens
    if drop_path is None:
        drop_path = nn.Identity()
    if out.index is None:
        kept = tokens._replace(x=tokens.x + drop_path(out.x))
        num = tokens.x.shape[1] - prefix
        processed = torch.full((tokens.x.shape[0], ), num,
                               device=tokens.x.device) if \
            tokens.mask is None else tokens.mask[:, prefix:].sum(-1)
        return kept._replace(x=ffn_residual(kept, None), processed=processed)
    processed = out.mask[:, prefix:].sum(-1)
    kept = Tokens(
        gather_tokens(tokens.x, out.index) + drop_path(out.x),
        gather_tokens(tokens.pos, out.index), out.mask)  # (B, P + R', ...)
    if attn.prune_mode == 'drop':
        return kept._replace(x=ffn_residual(kept, None), processed=processed)
    context = tokens._replace(
        x=scatter_tokens(tokens.x, out.index, kept.x, out.mask)) \
        if ffn_context else None
    kept = kept._replace(x=ffn_residual(kept, context))
    return tokens._replace(
        x=scatter_tokens(tokens.x, out.index, kept.x, out.mask),
        processed=processed)
