"""No state that one call leaves for the next: position features are made
per call, so nothing created under one mode (inference, fake tensors of
torch.export, another dtype) is returned under another."""
import pytest
import torch
from conftest import TINY
from helpers import images, probe_loss
from mmpretrain.registry import MODELS

from mmceformer.ops import linear_attention, linear_attention_reference
from mmceformer.ops.linear_attention import autocast_disabled


def qkv(dtype=torch.float32, requires_grad=False, num=17):
    gen = torch.Generator().manual_seed(0)
    return [
        torch.randn(1, 2, num, 8, generator=gen,
                    dtype=dtype).requires_grad_(requires_grad)
        for _ in range(3)
    ]


def test_training_after_an_inference_mode_forward():
    with torch.inference_mode():
        linear_attention(*qkv())
    out = linear_attention(*qkv(requires_grad=True))
    out.sum().backward()  # the cached features once were inference tensors
    model = MODELS.build(dict(type='EAttentionViT', attn_mode='linear',
                              **TINY['EAttentionViT']))
    model.eval()
    with torch.inference_mode():
        model(images())
    model.train()
    probe_loss(model(images())).backward()


def test_eager_forward_after_torch_export():
    import inspect
    if not hasattr(torch, 'export') or 'strict' not in inspect.signature(
            torch.export.export).parameters:
        pytest.skip('this torch has no non-strict torch.export')

    class Attention(torch.nn.Module):

        def forward(self, q, k, v):
            return linear_attention(q, k, v)

    inputs = tuple(qkv())
    torch.export.export(Attention(), inputs, strict=False)
    # once, a FakeTensor from the export was returned to this eager call
    torch.testing.assert_close(
        linear_attention(*inputs), linear_attention_reference(*inputs))


def test_another_dtype_after_a_float32_call():
    linear_attention(*qkv())
    q, k, v = qkv(torch.float64)
    out = linear_attention(q, k, v)
    assert out.dtype == torch.float64
    torch.testing.assert_close(
        out, linear_attention_reference(q, k, v), rtol=1e-6, atol=1e-6)


def test_autocast_off_on_a_device_without_autocast():
    """torch 2.1 raises when asked for autocast on 'mps'; there is then
    nothing to turn off, so the kernels' context must not raise."""
    with autocast_disabled(torch.device('mps')):
        pass
