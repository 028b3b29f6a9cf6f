# Figure 3-6: top-k selection instead of inverse-CDF sampling.
_base_ = ['./cls_deit_s_eattn_in1k.py']
model = dict(backbone=dict(select='topk'))
