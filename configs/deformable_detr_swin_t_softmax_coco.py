# Deformable DETR with Swin-T, softmax attention (thesis table 3-6).
_base_ = ['./deformable_detr_deit_s_softmax_coco.py']
# Every attention mode starts from the softmax weights (thesis table 3-6).
pretrained = 'work_dirs/cls_swin_t_softmax_in1k/epoch_300.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='EAttentionSwin',
        arch='tiny',
        attn_mode='softmax',
        keep_ratio=0.7,
        prune_mode='skip',
        out_indices=(1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[192, 384, 768]))
