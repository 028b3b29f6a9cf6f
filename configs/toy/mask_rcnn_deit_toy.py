# The DeiT-shaped counterpart of configs/toy/mask_rcnn_ceformer_toy.py: the
# same Mask R-CNN, data and schedule, with the plain 4-block ViT of
# configs/toy/cls_deit_toy.py (16x16 patches, no convolutions) instead of
# CEFormer: table 4-7's question (what do CEFormer's convolutions give a
# detector?) in miniature. Its default checkpoint is the softmax stage 1 of
# configs/toy/cls_deit_toy.py; tools/analysis/train_modes.py trains softmax
# and E-Attention of both toys, each from a softmax stage 1 of its own
# backbone (--checkpoint; for CEFormer, cls_ceformer_toy.py trained with
# model.backbone.attn_mode=softmax), as docs/tables.md reports.
_base_ = ['./mask_rcnn_ceformer_toy.py']
image_size = 256
embed_dims = 96
pretrained = 'work_dirs/cls_deit_toy/epoch_8.pth'
model = dict(
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
        attn_mode='eattn',
        pos_weight='2d',
        keep_ratio=0.7,
        prune_layers=[2, 3],
        prune_mode='skip',
        out_type='pyramid',
        pyramid_levels=(0, 1, 2, 3),  # strides 4-32, as FPN takes them
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[
        embed_dims // 4, embed_dims // 2, embed_dims, embed_dims
    ]))
