# Stage 1 for the DeiT-shaped toy detectors (configs/toy/
# deformable_detr_deit_toy.py, mask_rcnn_deit_toy.py): a 4-block ViT with
# DeiT's 16x16 patches, softmax attention, on the demo's stage-1 set (shape
# of one object, 128x128). Softmax, as the thesis's table 3-6 starts every
# attention mode from the same softmax ImageNet weights (sampling is
# parameter-free; the modes share the parameters).
#   python tools/train.py configs/toy/cls_deit_toy.py
_base_ = ['./cls_ceformer_toy.py']
image_size = 128
embed_dims = 96
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
        attn_mode='softmax',
        pos_weight='2d',
        keep_ratio=0.7,
        prune_layers=[2, 3],
        prune_mode='drop',
        out_type='cls_token'),
    head=dict(in_channels=embed_dims))
