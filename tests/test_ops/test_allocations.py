"""What the linear attention's steps allocate, and the feature map's
values and gradient: each large new tensor costs page faults on glibc
(docs/benchmarks.md, "Page faults")."""
import math
import sys

import pytest
import torch
from helpers import NewTensors

from mmceformer.ops import (feature_map_fn, linear_attention,
                            linear_attention_reference)

GRID = (3, 4)  # 12 grid tokens + 1 CLS = 13
SEQ = GRID[0] * GRID[1] + 1


def qkv(num_q=SEQ, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 3, num_q, 8, generator=gen)
    k = torch.randn(2, 3, SEQ, 8, generator=gen)
    v = torch.randn(2, 3, SEQ, 5, generator=gen)
    return q, k, v


@pytest.mark.parametrize('grad', [False, True])
def test_feature_map_makes_two_tensors(grad):
    """phi(x) = r + e^(x - r) with r = max(x, 0) writes into its two
    temporaries: two new tensors of x's size, not four (each large new
    tensor costs page faults); the values of F.elu(x) + 1, and a gradient
    that gradcheck accepts through the in-place steps."""
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=grad)
    with NewTensors() as made:
        phi = feature_map_fn(x)
    assert made.sizes.count(x.numel()) == 2
    torch.testing.assert_close(phi, torch.nn.functional.elu(x) + 1)
    if grad:
        assert torch.autograd.gradcheck(feature_map_fn, (x, ))


def test_feature_map_gradient_is_elus_at_zero():
    """At x = 0, where padded cells sit at initialisation (zero tokens,
    zero biases), the derivative of elu(x) + 1 is 1 from both sides."""
    x = torch.tensor([-1., 0., 2.], dtype=torch.float64, requires_grad=True)
    feature_map_fn(x).sum().backward()
    torch.testing.assert_close(
        x.grad, torch.tensor([math.exp(-1.), 1., 1.], dtype=torch.float64))


def test_quadratic_order_makes_one_similarity_matrix(monkeypatch):
    """The O(Nq Nk) order makes its (B, H, Nq, Nk) similarities once (the
    position weight is applied in place) and takes S V and S 1 in one
    product."""
    module = sys.modules['mmceformer.ops.linear_attention']
    monkeypatch.setattr(module, 'QUADRATIC_COST_RATIO', math.inf)
    q, k, v = qkv(num_q=7)
    with torch.no_grad(), NewTensors() as made:
        out = linear_attention(q, k, v, pos_weight='2d', grid_size=GRID,
                               q_pos=torch.arange(7))
    assert made.sizes.count(2 * 3 * 7 * SEQ) == 1
    assert 2 * 3 * 7 * (5 + 1) in made.sizes  # numerator and denominator
    torch.testing.assert_close(
        out,
        linear_attention_reference(
            q, k, v, pos_weight='2d', grid_size=GRID, q_pos=torch.arange(7)),
        atol=1e-5,
        rtol=1e-5)
