"""Small helpers shared by the tests (tests/ is on sys.path via conftest)."""
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def in_mode(model, training):
    """mmpretrain backbones' train()/eval() return None: set and return."""
    model.train(training)
    return model


def images(batch=2, size=(64, 64), seed=0):
    """(batch, 3, H, W) standard normal images, reproducible."""
    return torch.randn(
        batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def probe_loss(outs, seed=0):
    """A scalar that depends on every output element: a fixed random
    projection. (A plain ``mean`` of a LayerNorm output is 0 whatever the
    input, so its gradients are round-off.)"""
    gen = torch.Generator().manual_seed(seed)
    return sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)


def peaked_attention(model, std=0.25, seed=0, key_bias=0.):
    """Larger ``qkv`` weights, so that attention (and with it the tokens that
    sampling keeps) depends on the image, as in a trained model; at init the
    CLS row is nearly uniform and every image keeps the same tokens.

    ``key_bias`` < 0 shifts the keys into the exponential part of ``elu + 1``
    (the linear kernel's rows are too flat otherwise for images to keep
    different counts); softmax rows do not change with it."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith('qkv'):
                module.weight.normal_(0, std, generator=gen)
                if key_bias and module.bias is not None:
                    dims = module.weight.shape[1]
                    module.bias[dims:2 * dims] = key_bias
    return model


def count_scatters(monkeypatch):
    """A list that gets one entry per call of the pruning block's
    ``scatter_tokens`` (which still runs)."""
    from mmceformer.models.layers import token_block
    calls = []
    scatter = token_block.scatter_tokens

    def counting(*args):
        calls.append(1)
        return scatter(*args)

    monkeypatch.setattr(token_block, 'scatter_tokens', counting)
    return calls


class NewTensors(TorchDispatchMode):
    """The sizes (numel) of the tensors that ops make: no views, no
    in-place writes (an op whose output aliases an input is not counted).
    Sizes, not shapes: matmul makes its output as a 3-d bmm."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor)
        }
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and \
                    t.untyped_storage().data_ptr() not in inputs:
                self.sizes.append(t.numel())
        return out
