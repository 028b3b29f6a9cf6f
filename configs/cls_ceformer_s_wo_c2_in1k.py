# Table 4-3 ablation: CEFormer-S without C2, locality (no depthwise 3x3
# in the FFN).
_base_ = ['./cls_ceformer_s_in1k.py']
model = dict(backbone=dict(use_c2=False))
