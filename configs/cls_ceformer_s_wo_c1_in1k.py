# Table 4-3 ablation: CEFormer-S without C1, translation invariance
# (no depthwise conv on V).
_base_ = ['./cls_ceformer_s_in1k.py']
model = dict(backbone=dict(use_c1=False))
