# Table 3-2 "Ours-A": linear attention without the cos re-weighting.
_base_ = ['./cls_deit_s_linear_in1k.py']
model = dict(backbone=dict(pos_weight=None))
