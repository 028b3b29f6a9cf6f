"""How much more often E-Attention keeps the tokens on objects than the
tokens on the background, over an annotated (COCO-format) image set.

    python tools/analysis/token_adaptivity.py CONFIG CHECKPOINT \
        --ann-file data/toy_coco/annotations/instances_val.json \
        --img-dir data/toy_coco/val [--cfg-options model.backbone.score=all]

For each pruning block: the keep rate of the tokens whose 16 x 16 cell
overlaps an object (any pixel of an instance mask), the keep rate of the
other tokens, and their ratio, counted over all images. 1.0 means the
sampling does not prefer objects; the thesis's premise is that the CLS
token's attention makes it > 1. Its ceiling is the ratio had the same
number of kept tokens gone to the object cells first: a block that keeps
most tokens cannot score high, however well it chooses. Works for
detection and classification configs (the image goes through the config's
test pipeline, as in tools/analysis/visualize_tokens.py). Sampling is
parameter-free, so ``--cfg-options model.backbone.score=cls_v`` measures
another score on the same checkpoint.
"""
import argparse
import json
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import visualize_tokens  # noqa: E402

PATCH = 16


def object_cells(polygons: Sequence[np.ndarray], image_shape: Sequence[int],
                 scale: Sequence[float]) -> np.ndarray:
    """(Hg, Wg) bool: which 16 x 16 cells of an (h, w) network input hold
    any pixel of the polygons.

    Args:
        polygons: each (K, 2) float, (x, y) in original image pixels.
        image_shape: (h, w) of the network input.
        scale: (sx, sy), original pixels -> network-input pixels.
    """
    height, width = image_shape[:2]
    mask = np.zeros((height, width), np.uint8)
    for polygon in polygons:
        points = np.asarray(polygon, np.float64).reshape(-1, 2) * scale
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    grid_h, grid_w = -(-height // PATCH), -(-width // PATCH)
    padded = np.zeros((grid_h * PATCH, grid_w * PATCH), np.uint8)
    padded[:height, :width] = mask
    # (Hg, 16, Wg, 16) -> any pixel per cell
    return padded.reshape(grid_h, PATCH, grid_w, PATCH).any(axis=(1, 3))


def read_objects(ann_file: str) -> Tuple[List[dict], Dict[int, list]]:
    """A COCO instance file -> its images and, per image id, the polygons
    ((K, 2) float arrays) of its objects (RLE masks are not read)."""
    with open(ann_file) as f:
        coco = json.load(f)
    polygons = {image['id']: [] for image in coco['images']}
    for ann in coco['annotations']:
        if isinstance(ann['segmentation'], list):  # polygons, not RLE
            polygons[ann['image_id']].extend(
                np.asarray(p).reshape(-1, 2) for p in ann['segmentation'])
    return coco['images'], polygons


def image_object_cells(image: dict, polygons: Sequence[np.ndarray],
                       shown_shape: Sequence[int]) -> np.ndarray:
    """:func:`object_cells` of a COCO image (its ``width``/``height``)
    shown to the network at ``shown_shape`` (h, w, ...)."""
    scale = (shown_shape[1] / image['width'],
             shown_shape[0] / image['height'])
    return object_cells(polygons, shown_shape, scale)


def keep_rates(kept: np.ndarray, on_object: np.ndarray) -> Dict[str, int]:
    """Counts of one grid: kept and total cells on objects and off them.
    Both arguments (Hg, Wg) bool."""
    if kept.shape != on_object.shape:
        raise ValueError(f'kept {kept.shape} and on_object '
                         f'{on_object.shape} grids differ in shape')
    return dict(
        object_kept=int((kept & on_object).sum()),
        object_cells=int(on_object.sum()),
        background_kept=int((kept & ~on_object).sum()),
        background_cells=int((~on_object).sum()))


def ratio(counts: Dict[str, int]) -> float:
    """Object keep rate / background keep rate (nan if a side is empty or
    nothing of the background is kept)."""
    if not counts['object_cells'] or not counts['background_cells'] or \
            not counts['background_kept']:
        return float('nan')
    object_rate = counts['object_kept'] / counts['object_cells']
    background_rate = counts['background_kept'] / counts['background_cells']
    return object_rate / background_rate


def ceiling(counts: Dict[str, int]) -> float:
    """The largest :func:`ratio` the same number of kept tokens could give:
    all object cells kept first, the rest on the background (inf if they
    fit on the objects; nan if a side is empty). The ratio depends on how
    many tokens a block keeps (when most are kept even a perfect choice is
    near 1), so read it against this."""
    kept = counts['object_kept'] + counts['background_kept']
    if not counts['object_cells'] or not counts['background_cells']:
        return float('nan')
    surplus = kept - counts['object_cells']  # kept tokens past the objects
    if surplus <= 0:
        return float('inf')
    return counts['background_cells'] / surplus


def measure(config: str,
            checkpoint: str,
            ann_file: str,
            img_dir: str,
            cfg_options: Optional[dict] = None,
            max_images: Optional[int] = None,
            device: str = 'cpu') -> List[dict]:
    """Per pruning block (in depth order), summed over the images:
    ``block`` (E-Attention layer index), the four counts of
    :func:`keep_rates`, ``ratio`` and its ``ceiling``."""
    images, polygons = read_objects(ann_file)
    built = visualize_tokens.build(config, checkpoint, device, cfg_options)
    totals: Dict[int, Dict[str, int]] = {}
    for image in images[:max_images]:
        shown, panels = visualize_tokens.kept_grids(
            *built, osp.join(img_dir, image['file_name']))
        on_object = image_object_cells(image, polygons[image['id']],
                                       shown.shape)
        for panel in panels:
            counts = keep_rates(panel['kept'], on_object)
            total = totals.setdefault(panel['index'], dict.fromkeys(counts, 0))
            for key, value in counts.items():
                total[key] += value
    return [
        dict(
            block=block,
            **counts,
            ratio=ratio(counts),
            ceiling=ceiling(counts))
        for block, counts in sorted(totals.items())
    ]


def format_table(rows: List[dict]) -> str:
    lines = [
        '| block | object kept | background kept | object / background '
        '| ceiling at this count kept |', '|---|---|---|---|---|'
    ]
    for row in rows:
        lines.append(
            f"| {row['block']} | "
            f"{row['object_kept'] / max(row['object_cells'], 1):.1%} "
            f"of {row['object_cells']} | "
            f"{row['background_kept'] / max(row['background_cells'], 1):.1%}"
            f" of {row['background_cells']} | {row['ratio']:.2f} | "
            f"{row['ceiling']:.2f} |")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    visualize_tokens.add_model_arguments(parser)
    parser.add_argument(
        '--ann-file', required=True, help='COCO instance annotations')
    parser.add_argument(
        '--img-dir', required=True, help='folder of its images')
    parser.add_argument(
        '--max-images', type=int, help='only the first N images')
    parser.add_argument('--out', help='also write the rows as JSON')
    args = parser.parse_args(argv)
    rows = measure(args.config, args.checkpoint, args.ann_file, args.img_dir,
                   args.cfg_options, args.max_images, args.device)
    print(format_table(rows))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == '__main__':
    main()
