"""The FFN activation of the three backbones."""
import torch
from torch import Tensor, nn

from mmceformer.ops import is_tracing


class InferenceInPlaceGELU(nn.GELU):
    """``nn.GELU`` that, in inference (no autograd, not tracing or
    compiling), writes its result over its input (``gelu_``): the same
    values, and one new tensor fewer per FFN. At 800x1344 that tensor is
    the FFN's hidden map (22.6 MB in CEFormer-S, 103 MB in Swin-T's first
    stage), which glibc maps and faults in afresh on every forward
    (docs/benchmarks.md, "Page faults"). With autograd on (backward reads
    the input) and while tracing, it is ``nn.GELU``.

    Only for an input that nothing reads afterwards, such as a Linear's
    output in an FFN (where the backbones put it).
    """

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() or is_tracing():
            return super().forward(x)
        return torch.ops.aten.gelu_(x, approximate=self.approximate)


def gelu_in_place_in_ffns(model: nn.Module) -> int:
    """Replace the ``nn.GELU`` after the first Linear of every mmcv ``FFN``
    in ``model`` (``ffn.layers[i]`` = Sequential(Linear, act, Dropout))
    by :class:`InferenceInPlaceGELU` with the same approximation; returns
    how many. The Linear's output is a new tensor that only the GELU
    reads, so overwriting it is safe."""
    from mmcv.cnn.bricks.transformer import FFN
    replaced = 0
    for module in model.modules():
        if not isinstance(module, FFN):
            continue
        for stage in module.layers:
            if isinstance(stage, nn.Sequential) and len(stage) > 1 and \
                    isinstance(stage[0], nn.Linear) and \
                    type(stage[1]) is nn.GELU:
                stage[1] = InferenceInPlaceGELU(stage[1].approximate)
                replaced += 1
    return replaced
