"""The FFNs' GELU overwrites its input in inference: the same values, one
new tensor fewer per FFN, and nn.GELU wherever autograd or a trace needs
the input."""
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from helpers import NewTensors, images, in_mode
from mmpretrain.registry import MODELS
from torch import nn

from mmceformer.models.layers import InferenceInPlaceGELU


@pytest.mark.parametrize('approximate', ['none', 'tanh'])
def test_in_place_in_inference_out_of_place_with_autograd(approximate):
    act = InferenceInPlaceGELU(approximate)
    x = torch.randn(4, 7, dtype=torch.float64)
    expected = F.gelu(x, approximate=approximate)
    with torch.no_grad():
        inference = x.clone()
        out = act(inference)
    assert out.data_ptr() == inference.data_ptr()  # overwritten
    assert out.equal(expected)
    leaf = x.clone().requires_grad_()
    out = act(leaf)
    assert out.data_ptr() != leaf.data_ptr() and out.equal(expected)
    grad, = torch.autograd.grad(out.sum(), leaf)
    reference, = torch.autograd.grad(
        F.gelu(leaf, approximate=approximate).sum(), leaf)
    assert grad.equal(reference)


def test_not_in_place_while_tracing():
    act = InferenceInPlaceGELU()
    x = torch.randn(3, 5)
    before = x.clone()
    with torch.no_grad():
        traced = torch.jit.trace(act, x, check_trace=False)
    assert x.equal(before)  # the trace did not overwrite its example
    assert traced(x).equal(F.gelu(before)) and x.equal(before)


def with_gelu(model, cls):
    """The model with each FFN GELU of type ``cls`` (the other type swapped
    out), for an A/B of the same weights."""
    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.GELU):
                module._modules[name] = cls(child.approximate)
    return model


@pytest.mark.parametrize('name', sorted(TINY))
def test_every_ffn_gelu_overwrites_its_input_in_inference(name):
    """Each block's FFN GELU is in place: every registered backbone's
    inference makes one new tensor fewer per GELU call than with nn.GELU
    (CEFormer calls it twice a block: CLS and image rows), with the same
    outputs."""
    torch.manual_seed(0)
    model = in_mode(MODELS.build(dict(type=name, **TINY[name])), False)
    gelus = [m for m in model.modules() if isinstance(m, nn.GELU)]
    assert gelus and all(
        isinstance(m, InferenceInPlaceGELU) for m in gelus)
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1))
             for m in gelus]
    x = images(1, (64, 64))
    with torch.no_grad():
        with NewTensors() as in_place:
            out = model(x)
        for hook in hooks:
            hook.remove()
        assert len(calls) >= len(model.token_counts)  # one FFN a block
        with NewTensors() as plain:
            expected = with_gelu(model, nn.GELU)(x)
    assert len(plain.sizes) - len(in_place.sizes) == len(calls)
    for a, b in zip(out, expected):
        assert a.equal(b)
