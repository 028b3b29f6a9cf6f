"""ViTDet-style simple feature pyramid from a single stride-16 map."""
from typing import Tuple

from mmengine.model import BaseModule
from mmpretrain.models.utils import build_norm_layer
from torch import Tensor, nn


class SimplePyramid(BaseModule):
    """Strides 4/8/16/32 from the stride-16 token grid of a plain ViT
    (Li et al., ViTDet): two 2x deconvolutions, one 2x deconvolution, the
    identity, and a 2x max-pool. Channels shrink with resolution, as in
    ViTDet, so the stride-4 map stays cheap: (C/4, C/2, C, C).
    mmdet's FPN then takes ``in_channels=SimplePyramid.out_channels(C)``.

    Args:
        embed_dims (int): C, channels of the stride-16 map (divisible by 4).
        norm_cfg (dict): norm between the two stride-4 deconvolutions.
        init_cfg (dict | None): mmengine initialisation config.
    """

    def __init__(self,
                 embed_dims: int,
                 norm_cfg=dict(type='LN2d', eps=1e-6),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if embed_dims % 4:
            raise ValueError(f'embed_dims must be divisible by 4 for the '
                             f'stride-4 level, got {embed_dims}')
        half, quarter = embed_dims // 2, embed_dims // 4
        self.to_stride4 = nn.Sequential(
            nn.ConvTranspose2d(embed_dims, half, 2, stride=2),
            build_norm_layer(norm_cfg, half), nn.GELU(),
            nn.ConvTranspose2d(half, quarter, 2, stride=2))
        self.to_stride8 = nn.ConvTranspose2d(embed_dims, half, 2, stride=2)
        # ceil: odd grids (inputs not divisible by 32) stay fully covered
        self.to_stride32 = nn.MaxPool2d(2, stride=2, ceil_mode=True)

    @staticmethod
    def out_channels(embed_dims: int) -> Tuple[int, int, int, int]:
        return (embed_dims // 4, embed_dims // 2, embed_dims, embed_dims)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """x: (B, C, H, W) at stride 16 -> maps at strides 4, 8, 16, 32:
        (B, C/4, 4H, 4W), (B, C/2, 2H, 2W), (B, C, H, W),
        (B, C, ceil(H/2), ceil(W/2))."""
        return (self.to_stride4(x), self.to_stride8(x), x, self.to_stride32(x))
