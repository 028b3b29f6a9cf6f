"""The token moves of pruning, each against its alternatives and a plain
copy of the same bytes, interleaved in one run.

    python tools/analysis/benchmark_token_ops.py [--grid 50 84] \
        [--channels 1920] [--keep 0.7] [--repeats 30] \
        [--backbone CONFIG --shape 800 1344 [--deploy]]

Shapes default to CEFormer-S's hidden map at 800x1344 (a 50 x 84 grid of
1920 hidden channels, 70% of the cells kept). Rows:

- place kept rows onto a zero grid (``tokens_to_grid``): ``zeros`` +
  ``scatter_`` with the index expanded over the channels (the earlier
  formulation) against ``place_tokens`` (``zeros`` + ``index_copy_`` of
  whole rows) and a ``GridBuffer`` reused by the blocks of a forward
  (rows copied into the grid of the last block when the placement is the
  same; the last placement's rows zeroed first when it changed), beside a
  copy of the kept rows;
- read kept rows back (``grid_to_tokens``): ``gather`` with the expanded
  index (earlier) and advanced indexing ``x[b, index]`` (previous) against
  ``gather_tokens`` (``index_select`` of rows), beside the same copy.

``--backbone CONFIG`` adds the whole backbone of a config (eval, no
autograd, ``--deploy`` for its deploy form) on a ``--shape`` input, with
its forward's ``GridBuffer`` against a new zero grid per block.

Every alternative's output is checked equal to the baseline's before
timing. Prints the median ms and the ratio of each row to the first of
its group.
"""
import argparse
import contextlib
from unittest import mock

import torch

from mmceformer.ops import GridBuffer, gather_tokens, place_tokens
from mmceformer.utils.complexity import interleaved_latency


def scatter_zero_grid(index, src, num):
    """The earlier formulation: a zero grid, ``scatter_`` per element."""
    batch, _, channels = src.shape
    out = src.new_zeros(batch, num, channels)
    return out.scatter_(1, index[..., None].expand(-1, -1, channels), src)


def gather_expanded(x, index):
    """The earlier formulation: ``gather`` with the index expanded."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def gather_indexed(x, index):
    """The previous formulation: advanced indexing, ``x[b, index]``."""
    return x[torch.arange(x.shape[0])[:, None], index]


class NewGridPerBlock(GridBuffer):
    """The buffer-less baseline: every placement a new zero grid."""

    def place(self, index, src, mask, num, key):
        return place_tokens(index, src, mask, num, src.dtype)


def backbone_rows(config, shape, deploy):
    """The config's backbone forward with its GridBuffer and with a new
    grid per block (the class swapped in the model's module), checked
    equal; returns the rows of a group."""
    from mmengine.config import Config

    from roofline import backbone_and_input
    backbone, x = backbone_and_input(Config.fromfile(config), shape, deploy)
    module = __import__(type(backbone).__module__, fromlist=['GridBuffer'])
    if not hasattr(module, 'GridBuffer'):
        raise SystemExit(f'{type(backbone).__name__} uses no GridBuffer')

    def run(baseline):
        patch = mock.patch.object(module, 'GridBuffer', NewGridPerBlock) \
            if baseline else contextlib.nullcontext()
        with patch:
            return backbone(x)

    for got, expected in zip(run(False), run(True)):
        assert torch.equal(got, expected), 'GridBuffer changed the output'
    return [
        ('new zero grid per block (baseline)', lambda: run(True)),
        ('GridBuffer: one grid per forward (ours)', lambda: run(False)),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--grid', type=int, nargs=2, default=[50, 84])
    parser.add_argument('--channels', type=int, default=1920)
    parser.add_argument('--keep', type=float, default=0.7)
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--backbone', help='a config: time its backbone')
    parser.add_argument('--shape', type=int, nargs=2, default=[800, 1344])
    parser.add_argument('--deploy', action='store_true')
    args = parser.parse_args(argv)
    num = args.grid[0] * args.grid[1]
    kept = int(num * args.keep)
    torch.manual_seed(0)
    index = torch.randperm(num)[:kept].sort().values[None]  # (1, K)
    valid = torch.ones_like(index, dtype=torch.bool)
    src = torch.randn(1, kept, args.channels)
    grid = torch.randn(1, num, args.channels)
    # two placements that alternate: every call changes the placement
    other = torch.randperm(num)[:kept].sort().values[None]
    same, changing = GridBuffer(), GridBuffer()
    keys = [(index, None), (other, None)]
    turn = [0]

    def place_changing():
        turn[0] ^= 1
        return changing.place(keys[turn[0]][0], src, valid, num, keys[turn[0]])

    groups = {
        'kept rows onto a zero grid': [
            ('zeros + scatter_ (earlier)',
             lambda: scatter_zero_grid(index, src, num)),
            ('place_tokens: zeros + index_copy_ (ours)',
             lambda: place_tokens(index, src, valid, num, src.dtype)),
            ('GridBuffer, same placement as the last (ours, most blocks)',
             lambda: same.place(index, src, valid, num, keys[0])),
            ('GridBuffer, placement changed (ours, pruning blocks)',
             place_changing),
            ('copy of the kept rows (reference)', lambda: src.clone()),
        ],
        'kept rows back from the grid': [
            ('gather, expanded index (earlier)',
             lambda: gather_expanded(grid, index)),
            ('advanced indexing (previous)',
             lambda: gather_indexed(grid, index)),
            ('gather_tokens: index_select of rows (ours)',
             lambda: gather_tokens(grid, index)),
            ('copy of the kept rows (reference)', lambda: src.clone()),
        ],
    }
    with torch.no_grad():
        assert torch.equal(
            scatter_zero_grid(index, src, num),
            place_tokens(index, src, valid, num, src.dtype))
        assert torch.equal(
            gather_expanded(grid, index), gather_tokens(grid, index))
        assert torch.equal(
            gather_indexed(grid, index), gather_tokens(grid, index))
        for _ in range(3):
            assert torch.equal(
                place_changing(),
                place_tokens(keys[turn[0]][0], src, valid, num, src.dtype))
        if args.backbone:
            groups[f'{args.backbone} backbone, {args.shape[0]}x'
                   f'{args.shape[1]}'] = backbone_rows(args.backbone,
                                                       args.shape, args.deploy)
        print(f'grid {args.grid[0]}x{args.grid[1]}, {args.channels} '
              f'channels, {kept} of {num} cells kept; '
              f'{torch.get_num_threads()} threads, median of '
              f'{args.repeats}, interleaved')
        print('| op | ms | ratio to the first of its group |')
        print('|---|---|---|')
        for name, rows in groups.items():
            seconds = interleaved_latency([fn for _, fn in rows], 1,
                                          args.repeats)
            print(f'| **{name}** | | |')
            for (label, _), s in zip(rows, seconds):
                print(f'| {label} | {1e3 * s:.2f} | {s / seconds[0]:.2f} |')


if __name__ == '__main__':
    main()
