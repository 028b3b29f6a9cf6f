"""Memory that a training forward of one pruning E-Attention layer keeps
for backward, per token score.

    python tools/analysis/score_memory.py [--tokens 4096] [--dims 384]
        [--heads 6] [--batch 1]

Counts the bytes of every tensor autograd saves during the forward
(``torch.autograd.graph.saved_tensors_hooks``): what stays alive until
backward, the part of training memory that a score can add. Scores choose
indices, which have no gradient, so every score should keep what
``score='cls'`` keeps; a score that keeps its (chunk x N) similarity
matrices for autograd adds O(N^2).
"""
import argparse

import torch

import mmceformer  # noqa: F401
from mmceformer.models.layers import EAttention
from mmceformer.ops import SCORES


def saved_bytes(module: EAttention, x: torch.Tensor) -> int:
    """Bytes autograd saves in one forward of ``module`` on ``x``."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return total


def measure(tokens: int, dims: int, heads: int, batch: int) -> dict:
    """{(attn_mode, score): MB saved} for a pruning layer on (batch,
    1 + tokens, dims) inputs that require grad."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, tokens + 1, dims, generator=gen,
                    requires_grad=True)
    result = {}
    for mode in ('prune', 'eattn'):
        for score in SCORES:
            torch.manual_seed(0)
            module = EAttention(
                dims, heads, attn_mode=mode, prune_tokens=True,
                score=score).train()
            result[mode, score] = saved_bytes(module, x) / 2**20
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tokens', type=int, default=4096)
    parser.add_argument('--dims', type=int, default=384)
    parser.add_argument('--heads', type=int, default=6)
    parser.add_argument('--batch', type=int, default=1)
    args = parser.parse_args(argv)
    result = measure(args.tokens, args.dims, args.heads, args.batch)
    print(f'MB saved for backward, one pruning layer, N = {args.tokens} '
          f'tokens, C = {args.dims}, {args.heads} heads, batch '
          f'{args.batch} (ratio to score=cls)')
    print('| attn_mode (kernel) | ' + ' | '.join(SCORES) + ' |')
    print('|---|' + '---|' * len(SCORES))
    for mode, kernel in (('prune', 'softmax'), ('eattn', 'linear')):
        base = result[mode, 'cls']
        cells = [
            f'{result[mode, s]:.1f} ({result[mode, s] / base:.2f})'
            for s in SCORES
        ]
        print(f'| {mode} ({kernel}) | ' + ' | '.join(cells) + ' |')
    return result


if __name__ == '__main__':
    main()
