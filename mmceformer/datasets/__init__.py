from .toy_shapes import (CLASSES, COLOUR_FAMILIES, LABELS, make_toy_cls,
                         make_toy_coco)

__all__ = [
    'CLASSES', 'COLOUR_FAMILIES', 'LABELS', 'make_toy_cls', 'make_toy_coco'
]
