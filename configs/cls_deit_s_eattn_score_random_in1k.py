# Figure 3-5: E-Attention with score='random' instead of the CLS attention.
_base_ = ['./cls_deit_s_eattn_in1k.py']
model = dict(backbone=dict(score='random'))
