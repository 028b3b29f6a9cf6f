# DeiT-S on ImageNet-1k with the project's EAttentionViT backbone, softmax
# attention (thesis table 3-5, row "base"). mmpretrain's DeiT recipe: 300 epochs,
# AdamW lr 5e-4 x batch/512 (4 x 256 -> 1e-3), wd 0.05, cosine, mixup and
# cutmix, label smoothing; warm-up 5 epochs as DeiT (mmpretrain uses 20).
_base_ = ['mmpretrain::deit/deit-small_4xb256_in1k.py']
custom_imports = dict(imports=['mmceformer'], allow_failed_imports=False)

data_root = 'data/imagenet/'
attn_mode = 'softmax'

model = dict(
    backbone=dict(
        _delete_=True,
        type='EAttentionViT',
        arch='deit-small',
        img_size=224,
        patch_size=16,
        attn_mode=attn_mode,
        keep_ratio=0.7,
        prune_mode='drop'))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        end=5,
        convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5)
]
