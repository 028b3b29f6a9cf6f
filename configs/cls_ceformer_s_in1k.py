# CEFormer-S on ImageNet-1k (thesis table 4-2), E-Attention in every block.
# DeiT recipe (300 epochs, AdamW 5e-4 x batch/512, wd 0.05, cosine, 5
# warm-up epochs, mixup/cutmix as mmpretrain's DeiT); the thesis trains with
# batch 1024 and dropout 0.1.
_base_ = ['./cls_deit_s_softmax_in1k.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='CEFormer',
        arch='s',
        img_size=224,
        attn_mode='eattn',
        keep_ratio=0.7,
        prune_mode='drop',
        drop_rate=0.1,
        drop_path_rate=0.1),
    head=dict(in_channels=384))
