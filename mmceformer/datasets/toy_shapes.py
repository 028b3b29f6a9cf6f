"""Reproducible toy sets of coloured circles, squares and triangles on
textured backgrounds: the built-in default data of ``make demo``.

- ``make_toy_coco`` (instance segmentation, mmdet): ``train/``, ``val/``
  (PNG images) and ``annotations/instances_{train,val}.json``, which
  pycocotools and mmdet's ``CocoDataset`` read as they read COCO.
- ``make_toy_cls`` (classification, mmpretrain: the stand-in for ImageNet
  pre-training): the same generator at 128 x 128 with another seed; all
  objects of an image are of one colour family (red, green or blue), which
  is its label (or, with ``label='shape'`` / ``'colour_shape'``, of one
  shape / both), in ``annotations/labels_{train,val}.json`` (the OpenMMLab
  2.0 format of mmpretrain's ``BaseDataset``). The label is about the
  objects only (the background's palette is random), so a classifier must
  find them, as on ImageNet. The demo's set is the shape of one object
  (the ``toy_set`` of configs/toy/cls_ceformer_toy.py).

    python tools/make_toy_coco.py data/toy_coco --train 200 --val 50
    python tools/make_toy_coco.py data/toy_cls_shape --cls --label shape \
        --radius-range 0.16 0.4 --max-objects 1

The same seed gives the same files.
"""
import json
import math
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

CLASSES = ('circle', 'square', 'triangle')
COLOUR_FAMILIES = ('red', 'green', 'blue')
_BGR_CHANNEL = {'red': 2, 'green': 1, 'blue': 0}
# make_toy_cls's label kinds -> their class names.
LABELS = {
    'colour': COLOUR_FAMILIES,
    'shape': CLASSES,
    # class index = colour family * len(CLASSES) + shape
    'colour_shape': tuple(f'{colour} {shape}' for colour in COLOUR_FAMILIES
                          for shape in CLASSES),
}


def _background(rng: np.random.Generator, height: int, width: int):
    """Smooth stripes and blobs plus noise, in a random palette."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for channel in range(3):
        fx, fy = rng.uniform(0.02, 0.15, size=2)
        phase = rng.uniform(0, 2 * math.pi)
        image[..., channel] = (
            rng.uniform(60, 180) +
            rng.uniform(10, 40) * np.sin(fx * xx + fy * yy + phase))
    image += rng.normal(0, 8, size=image.shape)
    return image


def _polygon(rng: np.random.Generator, shape: str, cx: float, cy: float,
             radius: float) -> np.ndarray:
    """Vertices (K, 2) of a shape centred at (cx, cy), randomly rotated."""
    angle = rng.uniform(0, 2 * math.pi)
    if shape == 'circle':
        count, radii = 24, radius
    elif shape == 'square':
        count, radii = 4, radius * math.sqrt(2) / 1.2
    else:
        count, radii = 3, radius * 1.2
    theta = angle + np.arange(count) * 2 * math.pi / count
    return np.stack([cx + radii * np.cos(theta), cy + radii * np.sin(theta)],
                    axis=1)


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / max(union - inter, 1e-6)


def _colour(rng: np.random.Generator, family: Optional[int]) -> np.ndarray:
    """A BGR fill colour: any, or one of a family (its channel 150-255, the
    others 0-100)."""
    if family is None:
        return rng.uniform(0, 255, size=3)
    colour = rng.uniform(0, 100, size=3)
    colour[_BGR_CHANNEL[COLOUR_FAMILIES[family]]] = rng.uniform(150, 255)
    return colour


def make_image(rng: np.random.Generator,
               height: int,
               width: int,
               max_objects: int = 5,
               max_overlap: float = 0.3,
               colour_family: Optional[int] = None,
               category: Optional[int] = None,
               radius_range: Tuple[float, float] = (0.08, 0.2)
               ) -> Tuple[np.ndarray, List[dict]]:
    """One image (H, W, 3) uint8 BGR and its objects: dicts with
    ``category`` (index into CLASSES) and ``polygon`` (K, 2) float.

    Objects are filled with random colours, or with colours of
    ``COLOUR_FAMILIES[colour_family]``; their shapes are random, or all
    ``CLASSES[category]``. 1 to ``max_objects`` objects, each of a radius
    drawn from ``radius_range`` times the image's shorter side.
    """
    image = _background(rng, height, width)
    objects, boxes = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):  # objects may overlap, but not bury
            radius = rng.uniform(*radius_range) * min(height, width)
            cx = rng.uniform(radius, width - radius)
            cy = rng.uniform(radius, height - radius)
            shape = (int(rng.integers(len(CLASSES)))
                     if category is None else category)
            polygon = _polygon(rng, CLASSES[shape], cx, cy, radius)
            box = [*polygon.min(0), *polygon.max(0)]
            if all(_box_iou(box, other) < max_overlap for other in boxes):
                break
        else:
            continue
        colour = _colour(rng, colour_family)
        cv2.fillPoly(image, [np.round(polygon).astype(np.int32)],
                     colour.tolist())
        objects.append(dict(category=shape, polygon=polygon))
        boxes.append(box)
    return np.clip(image, 0, 255).astype(np.uint8), objects


def _coco_split(rng, num_images, height, width, image_dir, prefix,
                label=None, **image_options):
    """Write the images; return their COCO dict and, with ``label`` (a key
    of LABELS), each image's label (its objects share one colour family,
    one shape, or both), else None."""
    images, annotations, labels = [], [], []
    for index in range(num_images):
        family = category = None
        if label in ('colour', 'colour_shape'):
            family = int(rng.integers(len(COLOUR_FAMILIES)))
        if label in ('shape', 'colour_shape'):
            category = int(rng.integers(len(CLASSES)))
        if label == 'colour':
            labels.append(family)
        elif label == 'shape':
            labels.append(category)
        elif label == 'colour_shape':
            labels.append(family * len(CLASSES) + category)
        image, objects = make_image(
            rng,
            height,
            width,
            colour_family=family,
            category=category,
            **image_options)
        name = f'{prefix}_{index:05d}.png'
        cv2.imwrite(osp.join(image_dir, name), image)
        image_id = index + 1
        images.append(
            dict(id=image_id, file_name=name, height=height, width=width))
        for obj in objects:
            polygon = np.clip(obj['polygon'], 0, [width - 1, height - 1])
            x1, y1 = polygon.min(0)
            x2, y2 = polygon.max(0)
            area = float(cv2.contourArea(polygon.astype(np.float32)))
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=image_id,
                    category_id=obj['category'] + 1,
                    bbox=[
                        float(x1),
                        float(y1),
                        float(x2 - x1),
                        float(y2 - y1)
                    ],
                    area=area,
                    segmentation=[polygon.reshape(-1).round(2).tolist()],
                    iscrowd=0))
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)]
    coco = dict(images=images, annotations=annotations, categories=categories)
    return coco, labels if label else None


def make_toy_coco(out_dir: str,
                  num_train: int = 200,
                  num_val: int = 50,
                  image_size: Tuple[int, int] = (256, 256),
                  seed: int = 0) -> dict:
    """Write the toy set to ``out_dir``; returns the annotation file paths.

    Args:
        out_dir (str): target folder (created).
        num_train (int): training images.
        num_val (int): validation images.
        image_size (tuple[int, int]): (height, width) of every image.
        seed (int): the whole set is a function of it.
    """
    return _write_set(out_dir, num_train, num_val, image_size,
                      seed)['instances']


def make_toy_cls(out_dir: str,
                 num_train: int = 2000,
                 num_val: int = 200,
                 image_size: Tuple[int, int] = (128, 128),
                 seed: int = 1,
                 label: str = 'colour',
                 radius_range: Tuple[float, float] = (0.08, 0.2),
                 max_objects: int = 5) -> dict:
    """Write the toy classification set to ``out_dir``: the objects of an
    image share one shape (``label='shape'``, classes ``CLASSES``), one
    colour family (``'colour'``, classes ``COLOUR_FAMILIES``) or both
    (``'colour_shape'``, 9 classes such as ``'red circle'``), which is its
    label (``annotations/labels_{train,val}.json``). The COCO instance files
    of the same images are written too, for measuring where tokens are
    kept.

    The defaults are the colour set (configs/toy/cls_ceformer_toy_colour.py).
    ``label='shape', radius_range=(0.16, 0.4), max_objects=1``, the demo's
    set (configs/toy/cls_ceformer_toy.py), draws one object at the
    detection set's pixel sizes (radius 0.08-0.2 of 256 px is 0.16-0.4 of
    128 px).

    Args:
        out_dir, num_train, num_val, image_size, seed: as
            :func:`make_toy_coco`; the default seed differs from its, so no
            detection image is a pre-training image.
        label (str): ``'shape'``, ``'colour'`` or ``'colour_shape'``.
        radius_range (tuple[float, float]): objects' radii, as fractions of
            the image's shorter side, 0 < low <= high <= 0.5.
        max_objects (int): objects per image, 1 to this.

    Returns:
        dict: split -> path of its label file. The file's metainfo records
        ``label``, ``radius_range`` and ``max_objects``.
    """
    if label not in LABELS:
        raise ValueError(
            f'label must be one of {sorted(LABELS)}, got {label!r}')
    low, high = radius_range
    if not 0 < low <= high <= 0.5:
        raise ValueError('radius_range must satisfy 0 < low <= high <= 0.5, '
                         f'got {tuple(radius_range)}')
    if max_objects < 1:
        raise ValueError(f'max_objects must be >= 1, got {max_objects}')
    return _write_set(
        out_dir,
        num_train,
        num_val,
        image_size,
        seed,
        label=label,
        radius_range=(low, high),
        max_objects=max_objects)['labels']


def _write_set(out_dir, num_train, num_val, image_size, seed, label=None,
               **image_options):
    if num_train < 1 or num_val < 1:
        raise ValueError(f'num_train and num_val must be >= 1, got '
                         f'{num_train} and {num_val}')
    height, width = image_size
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    paths = dict(instances={}, labels={})
    for split, count in (('train', num_train), ('val', num_val)):
        image_dir = osp.join(out_dir, split)
        os.makedirs(image_dir, exist_ok=True)
        coco, labels = _coco_split(rng, count, height, width, image_dir,
                                   split, label, **image_options)
        path = osp.join(out_dir, 'annotations', f'instances_{split}.json')
        with open(path, 'w') as f:
            json.dump(coco, f)
        paths['instances'][split] = path
        if labels is not None:
            path = osp.join(out_dir, 'annotations', f'labels_{split}.json')
            data_list = [
                dict(img_path=image['file_name'], gt_label=label)
                for image, label in zip(coco['images'], labels)
            ]
            with open(path, 'w') as f:
                json.dump(
                    dict(
                        metainfo=dict(
                            classes=list(LABELS[label]),
                            label=label,
                            **image_options),
                        data_list=data_list), f)
            paths['labels'][split] = path
    return paths
