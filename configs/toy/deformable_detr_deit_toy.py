# Table 3-6 in miniature: Deformable DETR with the DeiT-shaped toy backbone
# (configs/toy/cls_deit_toy.py, softmax) on the toy shapes set, on 2 CPU
# cores. Every attention mode starts from the same softmax stage-1
# checkpoint, as the thesis's table does; tools/analysis/train_modes.py
# trains the four modes x seeds and prints mAP and FPS beside the thesis's
# deltas (docs/tables.md). One mode by hand:
#   python tools/train.py configs/toy/deformable_detr_deit_toy.py \
#       --cfg-options model.backbone.attn_mode=eattn
# mmdet's recipe, shrunk: 64-d transformer of 3+3 layers, 30 queries (at most
# 5 objects per image), one 256x256 scale.
_base_ = ['mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py']
custom_imports = dict(imports=['mmceformer'], allow_failed_imports=False)

data_root = 'data/toy_coco/'
metainfo = dict(
    classes=('circle', 'square', 'triangle'),
    palette=[(220, 20, 60), (0, 128, 255), (0, 200, 0)])
image_size = 256
embed_dims = 96
hidden = 64
pretrained = 'work_dirs/cls_deit_toy/epoch_8.pth'

model = dict(
    num_queries=30,
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='EAttentionViT',
        arch=dict(
            embed_dims=embed_dims,
            num_layers=4,
            num_heads=4,
            feedforward_channels=2 * embed_dims),
        img_size=image_size,
        patch_size=16,
        attn_mode='softmax',
        pos_weight='2d',
        keep_ratio=0.7,
        prune_layers=[2, 3],
        prune_mode='skip',  # dense maps: pruned tokens skip blocks
        out_type='pyramid',
        pyramid_levels=(1, 2, 3),  # strides 8, 16, 32
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(
        in_channels=[embed_dims // 2, embed_dims, embed_dims],
        out_channels=hidden,
        norm_cfg=dict(type='GN', num_groups=16)),
    encoder=dict(
        num_layers=3,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=hidden),
            ffn_cfg=dict(embed_dims=hidden, feedforward_channels=4 * hidden))),
    decoder=dict(
        num_layers=3,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=hidden),
            cross_attn_cfg=dict(embed_dims=hidden),
            ffn_cfg=dict(embed_dims=hidden, feedforward_channels=4 * hidden))),
    positional_encoding=dict(num_feats=hidden // 2),
    bbox_head=dict(num_classes=3, embed_dims=hidden),
    test_cfg=dict(max_per_img=30))

backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

max_epochs = 16
train_cfg = dict(max_epochs=max_epochs, val_interval=4)
optim_wrapper = dict(
    optimizer=dict(lr=4e-4),
    # the pyramid that turns the plain ViT's map into strides 8-32 is new:
    # full lr, as in the COCO configs
    paramwise_cfg=dict(custom_keys={'backbone.pyramid': dict(lr_mult=1.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[13],
        gamma=0.1)
]
default_hooks = dict(
    logger=dict(interval=10), checkpoint=dict(interval=4, max_keep_ckpts=1))
auto_scale_lr = dict(enable=False, base_batch_size=4)
