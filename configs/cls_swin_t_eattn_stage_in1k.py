# Swin-T E-Attention over each stage's whole map instead of 7x7 windows
# (attn_scope='stage'; not in the thesis: a linear kernel's cost does not
# grow with the window, FLatten Transformer widens Swin's windows likewise).
# Loads the windowed checkpoints unchanged; fine-tune them, the receptive
# field differs.
_base_ = ['./cls_swin_t_eattn_in1k.py']
model = dict(backbone=dict(attn_scope='stage'))
