# Swin-S (thesis tables 3-4, 3-5).
_base_ = ['./cls_swin_t_softmax_in1k.py']
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.3),
    head=dict(in_channels=768))
