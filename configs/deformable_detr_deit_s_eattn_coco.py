# Deformable DETR with deit-s and attn_mode='eattn' (thesis table 3-6).
_base_ = ['./deformable_detr_deit_s_softmax_coco.py']
model = dict(backbone=dict(attn_mode='eattn'))
