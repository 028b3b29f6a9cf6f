# Mask R-CNN + FPN with CEFormer-S on COCO instance segmentation (thesis
# table 4-7). Recipe of mmdet's Swin Mask R-CNN 1x: AdamW lr 1e-4, wd 0.05,
# 12 epochs, steps at 8 and 11, 2 images per GPU x 8 GPUs.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']
custom_imports = dict(imports=['mmceformer'], allow_failed_imports=False)

data_root = 'data/coco/'
# An ImageNet checkpoint of the same CEFormer trained by
# configs/cls_ceformer_s_in1k.py (any mmpretrain classifier checkpoint).
pretrained = 'work_dirs/cls_ceformer_s_in1k/epoch_300.pth'
embed_dims = 384

model = dict(
    backbone=dict(
        _delete_=True,
        type='CEFormer',
        arch='s',
        attn_mode='eattn',
        prune_mode='skip',  # dense maps: pruned tokens skip blocks
        out_type='pyramid',
        drop_path_rate=0.1,
        # The stem's BatchNorm sees 2 images per GPU: its statistics stay
        # those of ImageNet (its affine part trains), as in mmdet's BN
        # backbones (norm_eval=True); dict(type='SyncBN') would sync them.
        stem_norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    data_preprocessor=dict(pad_size_divisor=32),
    neck=dict(
        in_channels=[embed_dims // 4, embed_dims //
                     2, embed_dims, embed_dims]))

train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# No weight decay on norms, the position embedding and the CLS token.
optim_wrapper = dict(
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        # CEFormer's names (its norms, ln1/ln2/bn, fall under
        # norm_decay_mult); Swin's keys of the base match nothing here
        custom_keys=dict(
            _delete_=True,
            pos_embed=dict(decay_mult=0.),
            cls_token=dict(decay_mult=0.))))
auto_scale_lr = dict(enable=False, base_batch_size=16)
