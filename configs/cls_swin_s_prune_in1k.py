# Swin-S with attn_mode='prune' (thesis tables 3-4, 3-5).
_base_ = ['./cls_swin_s_softmax_in1k.py']
model = dict(backbone=dict(attn_mode='prune'))
