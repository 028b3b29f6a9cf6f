# Stage 1 of the built-in demo, the stand-in for ImageNet pre-training: the
# toy CEFormer of configs/toy/mask_rcnn_ceformer_toy.py trained in
# mmpretrain at 128x128 to name the shape (circle, square, triangle) of the
# one object in an image, drawn at the detection set's pixel sizes on a
# random background in a random colour (toy set of tools/make_toy_coco.py
# --cls, with the options of `toy_set` below). Colour labels instead:
# cls_ceformer_toy_colour.py (docs/demo.md, "Which pre-training": the kept tokens
# follow the objects more, but detection mAP is lower).
# Stage 2 fine-tunes Mask R-CNN at 256x256 from its checkpoint through
# init_cfg, as the COCO configs do from ImageNet (the position embedding is
# resized on loading, as mmpretrain's ViT does).
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmceformer'], allow_failed_imports=False)

data_root = 'data/toy_cls_shape/'
# make_toy_cls's options for the set at data_root (tools/demo.py writes it
# with them, and again if its label files record others):
#   python tools/make_toy_coco.py data/toy_cls_shape --cls --label shape \
#       --radius-range 0.16 0.4 --max-objects 1
toy_set = dict(label='shape', radius_range=(0.16, 0.4), max_objects=1)
classes = ('circle', 'square', 'triangle')
image_size = 128
embed_dims = 96

model = dict(
    type='ImageClassifier',
    # The backbone of the detection toy config, option for option (a test
    # checks it), but for the input size and what a classifier needs: the
    # CLS token out, and pruned tokens dropped (as the cls_* configs).
    backbone=dict(
        type='CEFormer',
        arch=dict(
            embed_dims=embed_dims,
            depth=4,
            num_heads=4,
            mlp_ratio=2,
            stem_channels=32),
        img_size=image_size,
        attn_mode='eattn',
        pos_weight='2d',
        keep_ratio=0.7,
        prune_layers=[2, 3],
        prune_mode='drop',
        out_type='cls_token'),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=len(classes),
        in_channels=embed_dims,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
data_preprocessor = dict(
    num_classes=len(classes),
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs')
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='BaseDataset',
        data_root=data_root,
        ann_file='annotations/labels_train.json',
        data_prefix='train/',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='BaseDataset',
        data_root=data_root,
        ann_file='annotations/labels_val.json',
        data_prefix='val/',
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=1)
test_evaluator = val_evaluator

max_epochs = 8
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(
    # At 1e-3 shape labels stay at chance loss; 3e-4 learns them.
    optimizer=dict(type='AdamW', lr=3e-4, weight_decay=0.05),
    clip_grad=dict(max_norm=10.0),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        custom_keys={
            'pos_embed': dict(decay_mult=0.),
            'cls_token': dict(decay_mult=0.)
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(
        type='CosineAnnealingLR',
        by_epoch=True,
        begin=0,
        end=max_epochs,
        eta_min=1e-5)
]
default_hooks = dict(
    logger=dict(interval=10), checkpoint=dict(interval=1, max_keep_ckpts=2))
auto_scale_lr = dict(enable=False, base_batch_size=16)
