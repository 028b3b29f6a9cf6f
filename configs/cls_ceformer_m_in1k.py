# CEFormer-M (thesis table 4-2).
_base_ = ['./cls_ceformer_s_in1k.py']
model = dict(backbone=dict(arch='m', drop_path_rate=0.2))
