# Deformable DETR with swin-t and attn_mode='linear' (thesis table 3-6).
_base_ = ['./deformable_detr_swin_t_softmax_coco.py']
model = dict(backbone=dict(attn_mode='linear'))
