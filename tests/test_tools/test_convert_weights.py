"""tools/convert_weights.py on state dicts with the official key names."""
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tools'))
import convert_weights  # noqa: E402


def official_deit(num_layers=2, dims=48):
    """A state dict named as timm's DeiT (random values)."""
    gen = torch.Generator().manual_seed(0)
    shapes = {
        'cls_token': (1, 1, dims),
        'pos_embed': (1, 197, dims),
        'patch_embed.proj.weight': (dims, 3, 16, 16),
        'patch_embed.proj.bias': (dims, ),
        'norm.weight': (dims, ),
        'norm.bias': (dims, ),
        'head.weight': (10, dims),
        'head.bias': (10, ),
    }
    for i in range(num_layers):
        shapes.update({
            f'blocks.{i}.norm1.weight': (dims, ),
            f'blocks.{i}.norm1.bias': (dims, ),
            f'blocks.{i}.attn.qkv.weight': (3 * dims, dims),
            f'blocks.{i}.attn.qkv.bias': (3 * dims, ),
            f'blocks.{i}.attn.proj.weight': (dims, dims),
            f'blocks.{i}.attn.proj.bias': (dims, ),
            f'blocks.{i}.norm2.weight': (dims, ),
            f'blocks.{i}.norm2.bias': (dims, ),
            f'blocks.{i}.mlp.fc1.weight': (4 * dims, dims),
            f'blocks.{i}.mlp.fc1.bias': (4 * dims, ),
            f'blocks.{i}.mlp.fc2.weight': (dims, 4 * dims),
            f'blocks.{i}.mlp.fc2.bias': (dims, ),
        })
    return {k: torch.randn(s, generator=gen) for k, s in shapes.items()}


def test_deit_conversion_loads_strictly_into_evit_classifier():
    from mmpretrain.models import ImageClassifier

    import mmceformer  # noqa: F401
    official = official_deit()
    converted = convert_weights.convert_deit({'model': official})
    model = ImageClassifier(
        backbone=dict(
            type='EAttentionViT',
            arch=dict(
                embed_dims=48,
                num_layers=2,
                num_heads=3,
                feedforward_channels=192),
            attn_mode='eattn'),
        head=dict(
            type='VisionTransformerClsHead', num_classes=10, in_channels=48))
    model.load_state_dict(converted, strict=True)
    torch.testing.assert_close(model.backbone.layers[1].ffn.layers[1].weight,
                               official['blocks.1.mlp.fc2.weight'])
    torch.testing.assert_close(model.head.layers.head.weight,
                               official['head.weight'])


def official_relative_index(window):
    """The relative position index as the official Swin code defines it."""
    coords = torch.stack(
        torch.meshgrid(
            torch.arange(window), torch.arange(window),
            indexing='ij')).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    relative[:, :, 0] += window - 1
    relative[:, :, 1] += window - 1
    relative[:, :, 0] *= 2 * window - 1
    return relative.sum(-1)  # (N, N)


def to_official_swin(state, window):
    """mmpretrain SwinTransformer keys -> official names (values kept,
    except the relative index, which is rebuilt the official way)."""
    official = {}
    for key, value in state.items():
        new = key.replace('patch_embed.projection.', 'patch_embed.proj.')
        new = re.sub(r'^stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.',
                     r'layers.\1.blocks.\2.attn.', new)
        new = re.sub(r'ffn\.layers\.0\.0\.', 'mlp.fc1.', new)
        new = re.sub(r'ffn\.layers\.1\.', 'mlp.fc2.', new)
        new = re.sub(r'^stages\.', 'layers.', new)
        new = re.sub(r'^norm\d\.', 'norm.', new)
        if new.endswith('relative_position_index'):
            value = official_relative_index(window)
        official[new] = value
    return official


def official_patch_merging(x, norm_weight, norm_bias, reduction):
    """Official Swin PatchMerging on (B, H, W, C)."""
    x0, x1 = x[:, 0::2, 0::2], x[:, 1::2, 0::2]
    x2, x3 = x[:, 0::2, 1::2], x[:, 1::2, 1::2]
    x = torch.cat([x0, x1, x2, x3], -1)
    x = F.layer_norm(x, x.shape[-1:], norm_weight, norm_bias)
    return x @ reduction.t()


def test_swin_conversion_matches_official_computation():
    from mmpretrain.models.backbones import SwinTransformer

    from mmceformer.models import EAttentionSwin
    arch = dict(embed_dims=16, depths=[1, 1], num_heads=[1, 2])
    reference = SwinTransformer(arch=arch, window_size=7, out_indices=(1, ))
    official = to_official_swin(reference.state_dict(), window=7)
    gen = torch.Generator().manual_seed(0)
    # Official merging weights in the official channel order.
    official['layers.0.downsample.norm.weight'] = torch.randn(
        64, generator=gen)
    official['layers.0.downsample.norm.bias'] = torch.randn(64, generator=gen)
    official['layers.0.downsample.reduction.weight'] = torch.randn(
        32, 64, generator=gen)
    official['head.weight'] = torch.randn(5, 32, generator=gen)
    official['head.bias'] = torch.randn(5, generator=gen)
    converted = convert_weights.convert_swin(official)
    assert converted['head.fc.weight'].shape == (5, 32)
    backbone = {
        k[len('backbone.'):]: v
        for k, v in converted.items() if k.startswith('backbone.')
    }
    ours = EAttentionSwin(
        arch=arch, window_size=7, out_indices=(1, ), attn_mode='eattn')
    ours.load_state_dict(backbone, strict=True)
    # The index rebuilt the official way equals mmpretrain's own.
    assert torch.equal(
        ours.stages[0].blocks[0].attn.w_msa.relative_position_index,
        reference.stages[0].blocks[0].attn.w_msa.relative_position_index)
    # Patch merging with converted weights == the official computation.
    x = torch.randn(2, 8, 8, 16, generator=gen)
    merged, _ = ours.stages[0].downsample(x.reshape(2, 64, 16), (8, 8))
    expected = official_patch_merging(
        x, official['layers.0.downsample.norm.weight'],
        official['layers.0.downsample.norm.bias'],
        official['layers.0.downsample.reduction.weight'])
    torch.testing.assert_close(
        merged, expected.reshape(2, 16, 32), atol=1e-5, rtol=1e-5)


def test_cli_writes_mmengine_checkpoint(tmp_path):
    src, dst = tmp_path / 'deit.pth', tmp_path / 'converted.pth'
    torch.save({'model': official_deit()}, src)
    convert_weights.main(['deit', str(src), str(dst)])
    checkpoint = torch.load(dst)
    assert 'backbone.layers.0.ln1.weight' in checkpoint['state_dict']
