"""ViTDet-style simple feature pyramid from a single stride-16 map."""
from typing import Sequence, Tuple

from mmengine.model import BaseModule
from mmpretrain.models.utils import LayerNorm2d, build_norm_layer
from torch import Tensor, nn

STRIDES = (4, 8, 16, 32)
STRIDE_INDICES = (0, 1, 2, 3)


class _UpsampleBy4(nn.Sequential):
    """deconvolution, norm, activation, deconvolution; mmpretrain's
    ``LayerNorm2d`` is applied in the channels-last layout that the first
    deconvolution returns for a channels-last input (the token grid is
    one), so that the second runs on channels-last too: its own
    ``channel_first`` path copies to NCHW, on which oneDNN's transposed
    convolution ran 2.8x slower at 800x1344 (44 against 16 ms). The same
    operations, in the same order: exact."""

    def forward(self, x: Tensor) -> Tensor:
        first, norm, act, second = self
        x = first(x)  # (B, C/2, 2H, 2W)
        if isinstance(norm, LayerNorm2d):
            # (B, C/2, 2H, 2W) -> (B, 2H, 2W, C/2) -> back, views only
            x = norm(x.permute(0, 2, 3, 1),
                     data_format='channel_last').permute(0, 3, 1, 2)
        else:
            x = norm(x)
        return second(act(x))


class SimplePyramid(BaseModule):
    """Maps at strides 4/8/16/32 from the stride-16 token grid of a plain
    ViT (Li et al., ViTDet): two 2x deconvolutions, one 2x deconvolution,
    the identity, and a 2x max-pool. Channels shrink with resolution, as in
    ViTDet, so the stride-4 map stays cheap: (C/4, C/2, C, C).

    Args:
        embed_dims (int): C, channels of the stride-16 map (divisible by 4).
        levels (Sequence[int]): which of the strides (4, 8, 16, 32) to
            output, by index; e.g. ``(1, 2, 3)`` for Deformable DETR. Only
            those branches are built.
        norm_cfg (dict): norm between the two stride-4 deconvolutions.
        init_cfg (dict | None): mmengine initialisation config.
    """

    def __init__(self,
                 embed_dims: int,
                 levels: Sequence[int] = (0, 1, 2, 3),
                 norm_cfg=dict(type='LN2d', eps=1e-6),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if embed_dims % 4:
            raise ValueError(f'embed_dims must be divisible by 4 for the '
                             f'stride-4 level, got {embed_dims}')
        levels = tuple(levels)
        if not levels or sorted(set(levels)) != list(levels) or \
                not set(levels) <= {0, 1, 2, 3}:
            raise ValueError('levels must be increasing indices into the '
                             f'strides {STRIDES}, got {levels}')
        self.levels = levels
        half, quarter = embed_dims // 2, embed_dims // 4
        branches = {
            0:
            lambda: _UpsampleBy4(
                nn.ConvTranspose2d(embed_dims, half, 2, stride=2),
                build_norm_layer(norm_cfg, half), nn.GELU(),
                nn.ConvTranspose2d(half, quarter, 2, stride=2)),
            1:
            lambda: nn.ConvTranspose2d(embed_dims, half, 2, stride=2),
            2:
            nn.Identity,
            # ceil: odd grids (inputs not divisible by 32) stay covered
            3:
            lambda: nn.MaxPool2d(2, stride=2, ceil_mode=True),
        }
        self.branches = nn.ModuleList(branches[i]() for i in levels)

    @staticmethod
    def out_channels(embed_dims: int, levels=STRIDE_INDICES) -> tuple:
        """Channels of the outputs, for the ``in_channels`` of mmdet's FPN
        or ChannelMapper."""
        all_channels = (embed_dims // 4, embed_dims // 2, embed_dims,
                        embed_dims)
        return tuple(all_channels[i] for i in levels)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """x: (B, C, H, W) at stride 16 -> one map per level: stride 4
        (B, C/4, 4H, 4W), 8 (B, C/2, 2H, 2W), 16 (B, C, H, W), 32
        (B, C, ceil(H/2), ceil(W/2)), each contiguous (NCHW).

        Contiguous, as mmdet's backbones return their maps: the token grid
        is a channels-last view, which convolutions carry through the FPN,
        and mmcv's RoIAlign reads its input's memory as NCHW whatever its
        strides (a channels-last map gives other RoI features)."""
        return tuple(branch(x).contiguous() for branch in self.branches)
