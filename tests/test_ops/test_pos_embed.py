"""The position-embedding resize as two matrix products equals mmpretrain's
``resize_pos_embed`` (one ``F.interpolate``), values and gradients, and the
backbones use it."""
import importlib

import pytest
import torch
from mmpretrain.models.utils import resize_pos_embed

from mmceformer.ops import interpolation_matrix, separable_resize_pos_embed


def embed(src, extra, channels=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, extra + src[0] * src[1], channels, generator=gen)


@pytest.mark.parametrize('mode', ['bicubic', 'bilinear'])
@pytest.mark.parametrize('src,dst', [((14, 14), (50, 84)), ((14, 14), (7, 9)),
                                     ((4, 6), (5, 5)), ((3, 3), (1, 8))])
@pytest.mark.parametrize('extra', [0, 1, 2])
def test_equals_mmpretrain_resize(mode, src, dst, extra):
    pos = embed(src, extra)
    want = resize_pos_embed(pos, src, dst, mode=mode, num_extra_tokens=extra)
    got = separable_resize_pos_embed(pos, src, dst, mode, extra)
    assert got.shape == want.shape == (1, extra + dst[0] * dst[1], 6)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_gradients_equal_mmpretrain_resize():
    src, dst = (14, 14), (20, 30)
    pos = embed(src, 1).requires_grad_()
    weight = torch.randn(1, 1 + dst[0] * dst[1], 6)
    (resize_pos_embed(pos, src, dst) * weight).sum().backward()
    want, pos.grad = pos.grad, None
    (separable_resize_pos_embed(pos, src, dst) * weight).sum().backward()
    torch.testing.assert_close(pos.grad, want, rtol=0, atol=1e-5)


def test_same_shape_returns_the_embedding_itself():
    pos = embed((4, 4), 1)
    assert separable_resize_pos_embed(pos, (4, 4), (4, 4)) is pos


def test_interpolation_rows_sum_to_one_and_identity_at_same_size():
    weights = interpolation_matrix(14, 50, 'bicubic', torch.zeros(()))
    assert weights.shape == (50, 14)
    torch.testing.assert_close(weights.sum(1), torch.ones(50))
    torch.testing.assert_close(
        interpolation_matrix(5, 5, 'bicubic', torch.zeros(())), torch.eye(5))


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="mode must be one of.*'nearest'"):
        separable_resize_pos_embed(embed((4, 4), 1), (4, 4), (8, 8),
                                   mode='nearest')
    with pytest.raises(ValueError, match='src_shape'):
        separable_resize_pos_embed(embed((4, 4), 1), (4, 5), (8, 8))


@pytest.mark.parametrize('backbone,options', [
    ('EAttentionViT', {}), ('CEFormer', {}),
    ('EAttentionSwin', dict(use_abs_pos_embed=True))])
def test_backbones_resize_with_the_separable_form(backbone, options,
                                                  monkeypatch):
    """At an input other than the learnt size the backbone's output is
    what mmpretrain's resize gives (to float rounding), and goes through
    the separable op."""
    from conftest import TINY
    from mmpretrain.registry import MODELS
    model = MODELS.build(
        dict(type=backbone, attn_mode='linear', **TINY[backbone], **options))
    model.eval()
    module = importlib.import_module(type(model).__module__)
    real = module.separable_resize_pos_embed
    calls = []

    def counted(pos, src, dst, *args, **kwargs):
        calls.append(tuple(dst))
        return real(pos, src, dst, *args, **kwargs)

    def upstream(pos, src, dst, *args, **kwargs):
        return resize_pos_embed(pos, src, dst, *args, **kwargs)

    images = torch.randn(1, 3, 64, 96,
                         generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(module, 'separable_resize_pos_embed', counted)
    with torch.no_grad():
        got = model(images)
    assert calls and calls[0] != tuple(model.patch_resolution)
    monkeypatch.setattr(module, 'separable_resize_pos_embed', upstream)
    with torch.no_grad():
        want = model(images)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5)
