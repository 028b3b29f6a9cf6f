# Table 4-3 ablation: CEFormer-S without C3, scale (no dilated depthwise
# convs).
_base_ = ['./cls_ceformer_s_in1k.py']
model = dict(backbone=dict(use_c3=False))
