# The colour-label variant of the demo's stage 1 (the demo's default until
# 2026-11-27; docs/demo.md, "Which pre-training"): configs/toy/cls_ceformer_toy.py
# on a set whose label is the colour family (red, green, blue) that all
# objects of an image share, 1-5 smaller objects of random shapes:
#   python tools/make_toy_coco.py data/toy_cls --cls
#   python tools/demo.py --cls-config configs/toy/cls_ceformer_toy_colour.py
# It teaches the CLS token to find the objects (the kept tokens follow them
# most) but not their shapes, which the detector must then tell apart.
_base_ = ['./cls_ceformer_toy.py']

data_root = 'data/toy_cls/'
toy_set = dict(label='colour', radius_range=(0.08, 0.2), max_objects=5)
classes = ('red', 'green', 'blue')
max_epochs = 4

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(
        type='CosineAnnealingLR',
        by_epoch=True,
        begin=0,
        end=max_epochs,
        eta_min=1e-5)
]
