"""Write the built-in toy COCO set (circles, squares, triangles).

    python tools/make_toy_coco.py data/toy_coco [--train 200] [--val 50]
        [--size H W] [--seed 0]
"""
import argparse

from mmceformer.datasets import make_toy_coco


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out_dir')
    parser.add_argument('--train', type=int, default=200)
    parser.add_argument('--val', type=int, default=50)
    parser.add_argument(
        '--size', type=int, nargs=2, default=(256, 256), metavar=('H', 'W'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    paths = make_toy_coco(args.out_dir, args.train, args.val, tuple(args.size),
                          args.seed)
    print(f'toy COCO set written: {paths}')


if __name__ == '__main__':
    main()
