"""Write the built-in toy sets (circles, squares, triangles).

    python tools/make_toy_coco.py data/toy_coco [--train 200] [--val 50]
        [--size H W] [--seed 0]
    python tools/make_toy_coco.py data/toy_cls --cls [--train 2000]
        [--val 200] [--size 128 128] [--seed 1] [--label colour]
        [--radius-range 0.08 0.2] [--max-objects 5]

The first writes the instance-segmentation set (COCO format, mmdet); with
``--cls`` the classification set for mmpretrain pre-training (label: the
colour family, the shape, or both, that an image's objects share;
mmceformer.datasets.make_toy_cls).
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
        help='with --cls: what the label names (default colour)')
    parser.add_argument(
        '--radius-range',
        type=float,
        nargs=2,
        metavar=('LOW', 'HIGH'),
        help='with --cls: object radii / shorter image side (0.08 0.2)')
    parser.add_argument(
        '--max-objects', type=int, help='with --cls: 1 to this (5)')
    args = parser.parse_args(argv)
    for name in ('label', 'radius_range', 'max_objects'):
        if getattr(args, name) is not None and not args.cls:
            parser.error(f'--{name.replace("_", "-")} needs --cls')
    make = make_toy_cls if args.cls else make_toy_coco
    # Unset options take the defaults of the function that writes the set.
    given = dict(
        num_train=args.train,
        num_val=args.val,
        image_size=args.size and tuple(args.size),
        seed=args.seed,
        label=args.label,
        radius_range=args.radius_range and tuple(args.radius_range),
        max_objects=args.max_objects)
    paths = make(args.out_dir,
                 **{k: v
                    for k, v in given.items() if v is not None})
    print(f'toy {"classification" if args.cls else "COCO"} set written: '
          f'{paths}')


if __name__ == '__main__':
    main()
