# DeiT-S with attn_mode='linear' (thesis table 3-5).
_base_ = ['./cls_deit_s_softmax_in1k.py']
model = dict(backbone=dict(attn_mode='linear'))
