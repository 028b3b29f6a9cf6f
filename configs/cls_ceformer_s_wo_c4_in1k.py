# Table 4-3 ablation: CEFormer-S without C4, the conv stem (a 16x16 patch
# embedding instead).
_base_ = ['./cls_ceformer_s_in1k.py']
model = dict(backbone=dict(use_c4=False))
