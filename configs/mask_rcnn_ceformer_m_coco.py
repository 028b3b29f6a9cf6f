# Mask R-CNN + FPN with CEFormer-M (thesis table 4-7).
_base_ = ['./mask_rcnn_ceformer_s_coco.py']
pretrained = 'work_dirs/cls_ceformer_m_in1k/epoch_300.pth'
embed_dims = 384
model = dict(
    backbone=dict(
        arch='m', drop_path_rate=0.2, init_cfg=dict(checkpoint=pretrained)),
    neck=dict(
        in_channels=[embed_dims // 4, embed_dims //
                     2, embed_dims, embed_dims]))
