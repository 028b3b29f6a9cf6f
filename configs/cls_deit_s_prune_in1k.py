# DeiT-S with attn_mode='prune' (thesis table 3-5).
_base_ = ['./cls_deit_s_softmax_in1k.py']
model = dict(backbone=dict(attn_mode='prune'))
