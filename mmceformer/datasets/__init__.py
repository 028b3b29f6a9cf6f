from .toy_shapes import CLASSES, make_toy_coco

__all__ = ['CLASSES', 'make_toy_coco']
