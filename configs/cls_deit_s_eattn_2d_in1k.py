# E-Attention with the 2-D (row and column) cos re-weighting of SPEC 2.1
# instead of the thesis's raster index.
_base_ = ['./cls_deit_s_eattn_in1k.py']
model = dict(backbone=dict(pos_weight='2d'))
