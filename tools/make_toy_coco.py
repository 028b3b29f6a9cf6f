"""Write the built-in toy sets (circles, squares, triangles).

    python tools/make_toy_coco.py data/toy_coco [--train 200] [--val 50]
        [--size H W] [--seed 0]
    python tools/make_toy_coco.py data/toy_cls --cls [--train 2000]
        [--val 200] [--size 128 128] [--seed 1] [--label shape]

The first writes the instance-segmentation set (COCO format, mmdet); with
``--cls`` the classification set for mmpretrain pre-training (label: the
shape, or with ``--label colour`` the colour family, that an image's
objects share; mmceformer.datasets.make_toy_cls).
"""
import argparse

from mmceformer.datasets import LABELS, make_toy_cls, make_toy_coco


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out_dir')
    parser.add_argument(
        '--cls',
        action='store_true',
        help='write the classification set (default: instance segmentation)')
    parser.add_argument('--train', type=int, help='200, or 2000 with --cls')
    parser.add_argument('--val', type=int, help='50, or 200 with --cls')
    parser.add_argument(
        '--size',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help='256 256, or 128 128 with --cls')
    parser.add_argument('--seed', type=int, help='0, or 1 with --cls')
    parser.add_argument(
        '--label',
        choices=sorted(LABELS),
        help='with --cls: what the label names (default shape)')
    args = parser.parse_args(argv)
    if args.label and not args.cls:
        parser.error('--label needs --cls')
    make = make_toy_cls if args.cls else make_toy_coco
    # Unset options take the defaults of the function that writes the set.
    given = dict(
        num_train=args.train,
        num_val=args.val,
        image_size=args.size and tuple(args.size),
        seed=args.seed,
        label=args.label)
    paths = make(args.out_dir,
                 **{k: v
                    for k, v in given.items() if v is not None})
    print(f'toy {"classification" if args.cls else "COCO"} set written: '
          f'{paths}')


if __name__ == '__main__':
    main()
