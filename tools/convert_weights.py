"""Convert official DeiT (timm) and Swin (microsoft) checkpoints to the key
layout of mmpretrain's classifiers, which EAttentionViT / EAttentionSwin load.

    python tools/convert_weights.py deit deit_small_patch16_224.pth out.pth
    python tools/convert_weights.py swin swin_tiny_patch4_window7_224.pth \
        out.pth

The output is an mmengine checkpoint ``{'state_dict': ..., 'meta': ...}``
with ``backbone.*`` and ``head.*`` keys: ``tools/test.py`` evaluates it with
a ``cls_*`` config, and detection configs load its backbone with
``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.
"""
import argparse
import re
from collections import OrderedDict
from typing import Dict

import torch

DEIT_RULES = [  # (official pattern, mmpretrain replacement), in order
    (r'^patch_embed\.proj\.', 'patch_embed.projection.'),
    (r'^blocks\.(\d+)\.norm1\.', r'layers.\1.ln1.'),
    (r'^blocks\.(\d+)\.norm2\.', r'layers.\1.ln2.'),
    (r'^blocks\.(\d+)\.attn\.', r'layers.\1.attn.'),
    (r'^blocks\.(\d+)\.mlp\.fc1\.', r'layers.\1.ffn.layers.0.0.'),
    (r'^blocks\.(\d+)\.mlp\.fc2\.', r'layers.\1.ffn.layers.1.'),
    (r'^norm\.', 'ln1.'),
]


def _rename(key: str, rules) -> str:
    for pattern, replacement in rules:
        new, count = re.subn(pattern, replacement, key)
        if count:
            return new
    return key


def _unwrap(checkpoint) -> Dict[str, torch.Tensor]:
    for field in ('model', 'state_dict', 'model_ema'):
        if isinstance(checkpoint, dict) and field in checkpoint:
            return checkpoint[field]
    return checkpoint


def convert_deit(state: Dict[str, torch.Tensor]) -> OrderedDict:
    """timm/official DeiT or ViT -> mmpretrain ImageClassifier with
    ``VisionTransformer`` (EAttentionViT) and ``VisionTransformerClsHead``."""
    out = OrderedDict()
    for key, value in _unwrap(state).items():
        if key.startswith('head.'):
            out['head.layers.' + key] = value  # head.layers.head.weight
        elif key.startswith('head_dist.') or key == 'dist_token':
            raise ValueError('distilled DeiT checkpoints have a distillation '
                             'token; convert the non-distilled release')
        else:
            out['backbone.' + _rename(key, DEIT_RULES)] = value
    return out


SWIN_RULES = [
    (r'^patch_embed\.proj\.', 'patch_embed.projection.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.attn\.',
     r'stages.\1.blocks.\2.attn.w_msa.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.',
     r'stages.\1.blocks.\2.ffn.layers.0.0.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.',
     r'stages.\1.blocks.\2.ffn.layers.1.'),
    (r'^layers\.(\d+)\.', r'stages.\1.'),
]


def merge_order_to_unfold(weight: torch.Tensor) -> torch.Tensor:
    """Patch merging: the official code concatenates the 2x2 neighbours as
    [(0,0), (1,0), (0,1), (1,1)] blocks of C channels; mmpretrain's
    ``nn.Unfold`` orders channel by channel, each with (0,0), (0,1), (1,0),
    (1,1). Reorders the last dimension (4C) from the first to the second."""
    channels = weight.shape[-1] // 4
    # official index = k * C + c, k over (0,0), (1,0), (0,1), (1,1)
    official = weight.reshape(*weight.shape[:-1], 4, channels)
    # k -> (kh, kw): 0 -> (0,0), 1 -> (1,0), 2 -> (0,1), 3 -> (1,1);
    # unfold position kh * 2 + kw: (0,0)=0, (0,1)=1, (1,0)=2, (1,1)=3
    by_unfold = official[..., [0, 2, 1, 3], :]
    return by_unfold.transpose(-1, -2).reshape(weight.shape)


def convert_swin(state: Dict[str, torch.Tensor]) -> OrderedDict:
    """Official Swin -> mmpretrain ImageClassifier with ``SwinTransformer``
    (EAttentionSwin), ``GlobalAveragePooling`` and ``LinearClsHead``."""
    state = _unwrap(state)
    num_stages = 1 + max(
        int(m.group(1))
        for m in (re.match(r'^layers\.(\d+)\.', k) for k in state) if m)
    out = OrderedDict()
    for key, value in state.items():
        if key.endswith('attn_mask'):
            continue  # recomputed by the model
        if key.startswith('head.'):
            out['head.fc.' + key[len('head.'):]] = value
            continue
        if key.startswith('norm.'):
            new = f'norm{num_stages - 1}.' + key[len('norm.'):]
        else:
            new = _rename(key, SWIN_RULES)
        if 'downsample.reduction' in new or 'downsample.norm' in new:
            value = merge_order_to_unfold(value)
        out['backbone.' + new] = value
    return out


CONVERTERS = dict(deit=convert_deit, swin=convert_swin)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('model', choices=sorted(CONVERTERS))
    parser.add_argument('src', help='official checkpoint')
    parser.add_argument('dst', help='converted mmengine checkpoint')
    args = parser.parse_args(argv)
    # Official releases hold plain tensors (and, for some, argparse or
    # numpy objects in side fields): load them safely and keep weights only.
    checkpoint = torch.load(args.src, map_location='cpu', weights_only=True)
    state = CONVERTERS[args.model](checkpoint)
    torch.save(
        dict(state_dict=state, meta=dict(converted_from=args.src)), args.dst)
    print(f'{len(state)} tensors written to {args.dst}')


if __name__ == '__main__':
    main()
