# Deformable DETR with Swin-T E-Attention over each stage's whole map
# (attn_scope='stage', see configs/cls_swin_t_eattn_stage_in1k.py).
_base_ = ['./deformable_detr_swin_t_eattn_coco.py']
model = dict(backbone=dict(attn_scope='stage'))
