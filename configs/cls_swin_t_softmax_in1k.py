# Swin-T on ImageNet-1k with the project's EAttentionSwin (thesis tables
# 3-4, 3-5): mmpretrain's Swin recipe (16 x 64, AdamW 1e-3, 300 epochs,
# 20 warm-up epochs, cosine).
_base_ = ['mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py']
custom_imports = dict(imports=['mmceformer'], allow_failed_imports=False)

data_root = 'data/imagenet/'

model = dict(
    backbone=dict(
        type='EAttentionSwin',
        arch='tiny',
        attn_mode='softmax',
        keep_ratio=0.7,
        prune_mode='skip'))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
