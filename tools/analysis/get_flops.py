"""Parameters and MACs of a config's model on a dummy input.

    python tools/analysis/get_flops.py CONFIG --shape H W

Counts multiply-accumulates of every matrix product and convolution that
actually runs, attention included, with pruned blocks counting the tokens
they really keep (see ``mmceformer.utils.complexity``). Detection configs:
backbone + neck (as mmdet's get_flops) and the whole detector;
classification: backbone and the whole classifier.
"""
import argparse

import mmceformer  # noqa: F401  (registers the models)
from mmceformer.utils.complexity import format_result, measure


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        default=[224, 224],
        help='input H W (one value: square)')
    parser.add_argument('--batch', type=int, default=1)
    args = parser.parse_args(argv)
    shape = args.shape * 2 if len(args.shape) == 1 else args.shape
    if len(shape) != 2:
        raise ValueError(f'--shape takes H W, got {args.shape}')
    result = measure(args.config, shape, args.batch)
    print(format_result(result))
    return result


if __name__ == '__main__':
    main()
