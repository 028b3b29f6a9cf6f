# Deformable DETR with DeiT-S, softmax attention (thesis table 3-6). mmdet's
# recipe: 50 epochs, AdamW lr 2e-4, backbone lr x 0.1, 16 x 2 images.
_base_ = ['mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py']
custom_imports = dict(imports=['mmceformer'], allow_failed_imports=False)

data_root = 'data/coco/'
# An ImageNet checkpoint of configs/cls_deit_s_softmax_in1k.py, or an
# official DeiT converted by tools/convert_weights.py. Every attention mode
# starts from these softmax weights, as the thesis's table 3-6 does (the
# modes share the parameters; sampling is parameter-free).
pretrained = 'work_dirs/cls_deit_s_softmax_in1k/epoch_300.pth'

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='EAttentionViT',
        arch='deit-small',
        attn_mode='softmax',
        keep_ratio=0.7,
        prune_mode='skip',  # dense maps: pruned tokens skip blocks
        out_type='pyramid',
        pyramid_levels=(1, 2, 3),  # strides 8, 16, 32 as ResNet's C3-C5
        drop_path_rate=0.1,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[192, 384, 384]))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
# mmdet's backbone lr x 0.1 is for pre-trained weights; the pyramid that
# turns the plain ViT's map into strides 8-32 is new: full lr.
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'backbone.pyramid': dict(lr_mult=1.0)}))
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
