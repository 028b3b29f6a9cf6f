# Swin-B (thesis tables 3-4, 3-5).
_base_ = ['./cls_swin_t_softmax_in1k.py']
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.5),
    head=dict(in_channels=1024))
