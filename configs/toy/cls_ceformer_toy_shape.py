# The shape-label variant of the demo's stage 1 (README, "The demo"):
# configs/toy/cls_ceformer_toy.py on a set whose label is the shape all
# objects of an image share, the objects at the detection set's pixel sizes:
#   python tools/make_toy_coco.py data/toy_cls_shape --cls --label shape \
#       --radius-range 0.16 0.4 --max-objects 3
# At the colour config's lr 1e-3 the shape labels stayed at chance loss for
# 4 epochs; 3e-4 learns them (about 60% top-1 after 8 epochs).
_base_ = ['./cls_ceformer_toy.py']

data_root = 'data/toy_cls_shape/'
classes = ('circle', 'square', 'triangle')
max_epochs = 8

model = dict(head=dict(num_classes=len(classes)))
data_preprocessor = dict(num_classes=len(classes))
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=3e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(
        type='CosineAnnealingLR',
        by_epoch=True,
        begin=0,
        end=max_epochs,
        eta_min=1e-5)
]
