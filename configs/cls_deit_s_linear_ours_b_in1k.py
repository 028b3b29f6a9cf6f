# Table 3-2 "Ours-B": linear attention with the identity feature map
# instead of elu + 1 (eq. 3-20).
_base_ = ['./cls_deit_s_linear_in1k.py']
model = dict(backbone=dict(feature_map='identity'))
