# DeiT-B (thesis tables 3-4, 3-5): mmpretrain's DeiT-B recipe, 16 x 64.
_base_ = ['./cls_deit_s_softmax_in1k.py']
model = dict(
    backbone=dict(arch='deit-base', drop_path_rate=0.1),
    head=dict(in_channels=768))
train_dataloader = dict(batch_size=64)
# mmpretrain's DeiT-B keeps an EMA of the weights (its evaluation model).
custom_hooks = [dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL')]
