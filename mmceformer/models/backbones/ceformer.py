"""CEFormer: E-Attention plus convolutional inductive biases (thesis ch. 4).

A plain (single-scale) transformer with a CLS token and E-Attention in every
block, and four switches for the ablation of table 4-3:

* C1, translation invariance (section 4.3.3, eq. 4-3): a depthwise 3x3
  convolution of V added to the attention output (``EAttention.value_conv``).
* C2, locality (4.3.4): the FFN is 1x1 -> depthwise 3x3 -> 1x1 on the token
  grid (inverted residual, fig. 4-7); the CLS token goes through the 1x1
  layers only.
* C3, scale (4.3.5): dilated depthwise 3x3 convolutions (dilations 2, 3)
  after the 1x1 expansion, summed with the depthwise 3x3 (fig. 4-8).
* C4, stable stem (4.4): Conv 7x7/2 -> BN -> ReLU -> MaxPool 3x3/2, then a
  4x4/4 projection, instead of a 16x16/16 patch embedding.
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from mmengine.logging import MMLogger
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.models.utils import (build_norm_layer, resize_pos_embed,
                                     to_2tuple)
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmceformer.ops import (GridBuffer, check_choice, conv_stem_in_bands,
                            gather_tokens, grid_to_tokens, is_tracing,
                            separable_resize_pos_embed, stem_band_rows,
                            stem_sizes, tokens_to_grid)
from mmceformer.registry import register_model
from ..layers import (EAttention, InferenceInPlaceGELU, SimplePyramid, Tokens,
                      attention_block)
from .eattention_vit import resolve_prune_layers


class ConvStem(BaseModule):
    """C4: Conv 7x7 stride 2 -> BN -> ReLU -> MaxPool 3x3 stride 2 ->
    Conv 4x4 stride 4: (B, 3, H, W) -> (B, C, H/16, W/16).

    Initialised as mmpretrain's ResNet stem: Kaiming normal (fan_out, ReLU)
    convolutions, BatchNorm weight 1 and bias 0.

    ``deploy=True`` (or :meth:`switch_to_deploy`): the BatchNorm folded
    into the convolution, which then has a bias (exact in eval mode).

    In inference (eval, no autograd, not tracing or compiling) with a norm
    that acts per channel (none, or BatchNorm with running statistics), a
    map whose first 7x7 output exceeds ``band_bytes`` runs in bands of
    rows (:func:`~mmceformer.ops.conv_stem_in_bands`): the same values,
    without the 137.6 MB first map and the max-pool's index map at
    800x1344 (glibc maps each afresh, so a forward can fault them in).

    Args:
        norm_cfg (dict): the norm after the 7x7 conv, e.g. ``dict(type='BN',
            requires_grad=True)`` or ``dict(type='SyncBN')``.
    """
    #: bytes of the first map's band in inference; the measured best of 2,
    #: 4, 8 and 16 MiB at 800x1344 (docs/benchmarks.md)
    band_bytes = 8 * 2**20

    def __init__(self,
                 in_channels: int,
                 stem_channels: int,
                 embed_dims: int,
                 deploy: bool = False,
                 norm_cfg=dict(type='BN')):
        super().__init__(init_cfg=[
            dict(
                type='Kaiming',
                layer='Conv2d',
                mode='fan_out',
                nonlinearity='relu'),
            dict(type='Constant', layer='_BatchNorm', val=1., bias=0.),
        ])
        self.conv = nn.Conv2d(
            in_channels, stem_channels, 7, stride=2, padding=3, bias=deploy)
        self.bn = nn.Identity() if deploy else build_norm_layer(
            norm_cfg, stem_channels)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.proj = nn.Conv2d(stem_channels, embed_dims, 4, stride=4)

    def forward(self, x: Tensor) -> Tensor:
        # Channels-last: CPU (oneDNN) convolution and max-pool run about
        # twice as fast on it (measured), and the token grid it gives
        # flattens to (B, N, C) tokens without a copy.
        x = x.contiguous(memory_format=torch.channels_last)
        rows = self._band_rows(x)
        if rows:
            return conv_stem_in_bands(x, self._first_band, self.proj,
                                      self.conv.out_channels, rows)
        return self.proj(self.pool(self.act(self.bn(self.conv(x)))))

    def _band_rows(self, x: Tensor) -> int:
        """Projection rows per band, or 0 for the whole map at once: in
        training (a BatchNorm's batch statistics need the whole map), with
        autograd or while tracing, with a norm that is not per channel,
        and where one band holds the whole map."""
        norm = self.bn
        per_channel = isinstance(norm, nn.Identity) or (
            isinstance(norm, _BatchNorm) and not norm.training
            and norm.track_running_stats)
        if self.training or not per_channel or torch.is_grad_enabled() \
                or is_tracing():
            return 0
        rows = stem_band_rows(x, self.conv.out_channels, self.band_bytes)
        return rows if rows < stem_sizes(x.shape[2])[2] else 0

    def _first_band(self, band: Tensor) -> Tensor:
        """Conv 7x7/2 -> norm -> ReLU on a band that brings its own rows
        (zero-padded at the image's edges): padding in width only."""
        conv = self.conv
        out = F.conv2d(band, conv.weight, conv.bias, conv.stride,
                       (0, conv.padding[1]))
        return self.act(self.bn(out))

    def switch_to_deploy(self):
        """``BN(W * x) = (g / s) W * x + (b - g m / s)``, s = sqrt(var+eps),
        with the running statistics: the eval-mode stem, in one conv."""
        if isinstance(self.bn, nn.Identity):
            return
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)
        conv = nn.Conv2d(
            self.conv.in_channels,
            self.conv.out_channels,
            7,
            stride=2,
            padding=3,
            bias=True).to(self.conv.weight)
        with torch.no_grad():
            conv.weight.copy_(self.conv.weight * scale[:, None, None, None])
            conv.bias.copy_(bn.bias - bn.running_mean * scale)
        self.conv, self.bn = conv, nn.Identity()


class ConvFFN(BaseModule):
    """FFN with C2 (depthwise 3x3) and C3 (dilated depthwise 3x3, dilations
    ``dilations``) on the token grid between its two 1x1 layers; with both
    off it is the plain MLP FFN. 1x1 convolutions on tokens are Linear
    layers; the CLS token goes through them only.

    ``fc1 -> sum of depthwise branches (image tokens) -> GELU -> fc2``.
    """

    def __init__(self,
                 embed_dims: int,
                 hidden_dims: int,
                 use_dwconv: bool = True,
                 dilations: Sequence[int] = (2, 3),
                 drop: float = 0.,
                 deploy: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.dilations = ([1] if use_dwconv else []) + list(dilations)
        if deploy and self.dilations:  # one merged kernel
            self.dw_convs = ModuleList([self._merged_conv(hidden_dims)])
        else:
            self.dw_convs = ModuleList([
                nn.Conv2d(
                    hidden_dims,
                    hidden_dims,
                    3,
                    padding=d,
                    dilation=d,
                    groups=hidden_dims) for d in self.dilations
            ])
        # in place in inference: every input of _output is a new tensor
        # (fc1's output, its gathered rows, or the convolutions' rows)
        self.act = InferenceInPlaceGELU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop)

    def forward(self,
                source: Tokens,
                num_prefix_tokens: int,
                grid_size,
                out_pos: Optional[Tensor] = None,
                out_mask: Optional[Tensor] = None,
                grid_buffer: Optional[GridBuffer] = None) -> Tensor:
        """
        Args:
            source (Tokens): (B, N, C) normalised tokens whose grid the
                convolutions see: the kept tokens (``drop`` mode; dropped
                cells are zero) or the full sequence (``skip`` mode).
            num_prefix_tokens (int): P, tokens without a cell (CLS).
            grid_size (tuple[int, int]): (Hg, Wg).
            out_pos (Tensor | None): (B, N') original indices of the tokens
                to return, a subset of the full ``source`` sequence (``skip``
                mode: the kept ones); None returns every source token.
            out_mask (Tensor | None): (B, N') bool padding mask of them.
            grid_buffer (GridBuffer | None): the forward's reused hidden
                grid for pruned sequences (no new zero map per block).

        Returns:
            Tensor: (B, N', C) FFN outputs.
        """
        hidden = self.fc1(source.x)  # (B, N, hidden), once per token
        if not len(self.dw_convs):  # the plain MLP
            if out_pos is not None:
                # a full source is in raster order: row p holds token p
                hidden = gather_tokens(hidden, out_pos)  # (B, N', hidden)
            return self._output(hidden)
        if out_pos is None:
            out_pos, out_mask = source.pos, source.mask
        # (B, N, hidden) -> (B, hidden, Hg, Wg)
        grid = tokens_to_grid(hidden, source.pos, source.mask,
                              num_prefix_tokens, grid_size, grid_buffer)
        # sum of the branches, without sum()'s extra pass adding to 0
        local = self.dw_convs[0](grid)
        for conv in self.dw_convs[1:]:
            local = local + conv(grid)
        # the image rows come from the grid, (B, N' - P, hidden)
        local = grid_to_tokens(local, out_pos, out_mask, num_prefix_tokens)
        if not num_prefix_tokens:
            return self._output(local)
        # The prefix rows (no cell; first in every sequence) and the image
        # rows reach fc2 apart and are joined after it: a cat of C-wide rows
        # instead of a copy of the hidden-wide (5C) map.
        prefix = self._output(hidden[:, :num_prefix_tokens])
        return torch.cat([prefix, self._output(local)], dim=1)

    def _output(self, hidden: Tensor) -> Tensor:
        """GELU -> fc2 on (B, n, hidden) rows -> (B, n, C)."""
        return self.drop(self.fc2(self.drop(self.act(hidden))))

    def _merged_conv(self, channels: int) -> nn.Conv2d:
        """The depthwise conv that holds every branch: kernel 2 d_max + 1,
        padding d_max (7x7 for dilations 1, 2, 3)."""
        reach = max(self.dilations)
        return nn.Conv2d(
            channels,
            channels,
            2 * reach + 1,
            padding=reach,
            groups=channels)

    def switch_to_deploy(self):
        """Structural re-parameterisation of C2 + C3: the summed depthwise
        3x3 branches of dilations ``d`` equal one depthwise conv whose
        kernel holds each 3x3 kernel at its dilated taps ``reach + d (i -
        1)``, biases added (zero padding agrees: every branch pads by its
        own reach, the merged one by the largest). Exact; one pass over the
        hidden map instead of one per branch plus their sums."""
        reach = max(self.dilations, default=0)
        first = self.dw_convs[0] if len(self.dw_convs) else None
        if first is None or (len(self.dw_convs) == 1 and first.dilation[0] == 1
                             and first.kernel_size[0] == 2 * reach + 1):
            return  # no branch, or one plain kernel already
        channels = self.dw_convs[0].in_channels
        merged = self._merged_conv(channels).to(first.weight)
        with torch.no_grad():
            merged.weight.zero_()
            merged.bias.zero_()
            for conv, d in zip(self.dw_convs, self.dilations):
                taps = slice(reach - d, reach + d + 1, d)  # 3 taps
                merged.weight[:, :, taps, taps] += conv.weight
                merged.bias += conv.bias
        self.dw_convs = ModuleList([merged])


class CEFormerBlock(BaseModule):
    """Pre-norm block: ``x + DropPath(EAttention(LN(x)))``, then
    ``x + DropPath(ConvFFN(LN(x)))``.

    ``skip_ffn_input`` (``prune_mode='skip'``): ``'all_tokens'`` gives the
    FFN every token (its convolutions see the pruned ones around the kept
    ones; fc1 runs on all), ``'kept_tokens'`` the kept ones only, their
    grid zero at pruned cells as in ``drop``."""

    def __init__(self,
                 embed_dims,
                 num_heads,
                 mlp_ratio,
                 drop_rate,
                 drop_path_rate,
                 norm_cfg,
                 ffn_cfg,
                 attn_cfg,
                 skip_ffn_input='all_tokens'):
        super().__init__()
        self.ln1 = build_norm_layer(norm_cfg, embed_dims)
        self.attn = EAttention(
            embed_dims, num_heads, proj_drop=drop_rate, **attn_cfg)
        self.ln2 = build_norm_layer(norm_cfg, embed_dims)
        self.ffn = ConvFFN(
            embed_dims, int(embed_dims * mlp_ratio), drop=drop_rate, **ffn_cfg)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 \
            else nn.Identity()
        # whether skip mode assembles the full sequence for the FFN: only
        # for convolutions that see it (a token-wise FFN never needs it)
        self.ffn_context = skip_ffn_input == 'all_tokens' and len(
            self.ffn.dw_convs) > 0

    def forward(self,
                tokens: Tokens,
                seq_len: int,
                grid_size,
                grid_buffer: Optional[GridBuffer] = None) -> Tokens:
        prefix = self.attn.num_prefix_tokens

        def ffn_residual(kept, context):  # (Tokens, Tokens | None) -> Tensor
            if context is None:
                out = self.ffn(
                    kept._replace(x=self.ln2(kept.x)),
                    prefix,
                    grid_size,
                    grid_buffer=grid_buffer)
            else:  # skip: the convolutions see every token of the grid
                out = self.ffn(
                    context._replace(x=self.ln2(context.x)), prefix, grid_size,
                    kept.pos, kept.mask)
            return kept.x + self.drop_path(out)

        return attention_block(
            tokens,
            self.attn,
            self.ln1,
            self.drop_path,
            ffn_residual,
            seq_len,
            grid_size,
            ffn_context=self.ffn_context)


def _is_pretrained(init_cfg) -> bool:
    """Whether an ``init_cfg`` (dict or list) loads a checkpoint."""
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    return any(
        isinstance(c, dict) and c.get('type') == 'Pretrained' for c in cfgs)


@register_model
class CEFormer(BaseBackbone):
    """CEFormer backbone (thesis chapter 4, table 4-2).

    Sizes: ``s`` = 12 blocks, ``m`` = 24, ``l`` = 24, of width 384/384/512,
    8 heads, stem width 128. The thesis does not give the FFN width;
    ``mlp_ratio=5`` lands the parameter counts (with a 1000-class linear
    head) at 26.8M / 52.4M / 91.9M against the thesis's 28M / 55M / 92M
    (within 5%); ratio 4 would give about 23M for S (-18%), ratio 6 about
    30.7M (+10%).

    Args:
        arch (str | dict): ``'s'``, ``'m'``, ``'l'`` or a dict with
            ``embed_dims``, ``depth``, ``num_heads`` (and optionally
            ``mlp_ratio``, ``stem_channels``).
        img_size (int | tuple): training size; sets the position embedding
            grid (size / 16), which is resized to every input.
        in_channels (int): input channels.
        use_c1, use_c2, use_c3, use_c4 (bool): the four biases (module
            docstring); off gives the plain counterpart (table 4-3).
        dilations (Sequence[int]): dilation rates of C3.
        attn_mode (str): ``'eattn'`` (default), ``'linear'``, ``'prune'`` or
            ``'softmax'``.
        keep_ratio, prune_layers, score, select, prune_mode, feature_map,
            pos_weight: as in :class:`EAttentionViT`.
        skip_ffn_input (str): with ``prune_mode='skip'``, what the FFN of a
            pruning block gets: ``'all_tokens'`` (default) every token, so
            its convolutions see the pruned tokens around the kept ones
            (fc1 runs on all of them), or ``'kept_tokens'``: only the kept
            ones, pruned cells zero in the FFN's grid as in ``'drop'``
            (fc1 on kept tokens only: less work, another function; see
            docs/benchmarks.md for what it measured). Other prune modes
            accept only the default.
        out_type (str): ``'cls_token'`` (B, C) for classification,
            ``'avg_featmap'`` (B, C), ``'featmap'`` (B, C, H/16, W/16),
            contiguous, or
            ``'pyramid'``: 4 maps at strides 4/8/16/32 with channels
            (C/4, C/2, C, C) for mmdet. With ``prune_mode='drop'`` the
            cells of dropped tokens are zero in the maps; ``'skip'`` keeps
            every cell (use it for detection).
        pyramid_levels (Sequence[int]): strides (4, 8, 16, 32) that
            ``'pyramid'`` returns, by index; ``(1, 2, 3)`` for Deformable
            DETR. Channels: ``SimplePyramid.out_channels(C, levels)``.
        drop_rate (float): dropout after attention and in the FFN.
        drop_path_rate (float): stochastic depth, linear over the blocks.
        norm_cfg (dict): token norm.
        stem_norm_cfg (dict): the stem's norm (C4), BatchNorm by default;
            ``dict(type='SyncBN')`` synchronises it across GPUs.
        norm_eval (bool): keep every BatchNorm (the stem's) in eval mode
            while training: running statistics frozen, as mmdet's BN
            backbones are at a few images per GPU. Default False.
        with_cp (bool): activation checkpointing of every block in training
            (recomputed in backward, random draws replayed), as mmpretrain's
            backbones offer; saves memory at the cost of time.
        deploy (bool): build the deploy form directly (what
            :meth:`switch_to_deploy` makes: merged C2/C3 kernels, the stem's
            BN folded), e.g. to load a checkpoint converted by
            ``tools/model_converters/reparameterize_model.py``.
        init_cfg (dict | list | None): mmengine initialisation; default the
            ViT recipe (:attr:`DEFAULT_INIT_CFG`: Linear truncated normal
            std 0.02 and bias 0, LayerNorm 1 / 0; the stem as mmpretrain's
            ResNet stem; CLS token and position embedding truncated normal
            std 0.02; depthwise convolutions PyTorch's default). Anything
            given replaces it, e.g. ``dict(type='Pretrained',
            checkpoint=..., prefix='backbone.')``.

    Input (B, 3, H, W), H and W divisible by 16 (mmdet pads to 32).
    """
    arch_zoo = {
        's': dict(embed_dims=384, depth=12, num_heads=8),
        'm': dict(embed_dims=384, depth=24, num_heads=8),
        'l': dict(embed_dims=512, depth=24, num_heads=8),
    }
    OUT_TYPES = ('cls_token', 'avg_featmap', 'featmap', 'pyramid')
    SKIP_FFN_INPUTS = ('all_tokens', 'kept_tokens')
    num_extra_tokens = 1  # CLS
    #: The ViT recipe (timm, DeiT), so that any config gets it, not only
    #: the classifiers that inherit mmpretrain's DeiT ``init_cfg``.
    DEFAULT_INIT_CFG = [
        dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
    ]

    def __init__(self,
                 arch='s',
                 img_size=224,
                 in_channels: int = 3,
                 use_c1: bool = True,
                 use_c2: bool = True,
                 use_c3: bool = True,
                 use_c4: bool = True,
                 dilations: Sequence[int] = (2, 3),
                 attn_mode: str = 'eattn',
                 keep_ratio: float = 0.7,
                 prune_layers: Optional[Sequence[int]] = None,
                 score: str = 'cls',
                 select: str = 'inverse_cdf',
                 train_draws: str = 'systematic',
                 prune_mode: str = 'drop',
                 skip_ffn_input: str = 'all_tokens',
                 feature_map: str = 'elu1',
                 pos_weight: Optional[str] = '1d',
                 out_type: str = 'cls_token',
                 pyramid_levels: Sequence[int] = (0, 1, 2, 3),
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 norm_cfg=dict(type='LN', eps=1e-6),
                 stem_norm_cfg=dict(type='BN'),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 deploy: bool = False,
                 init_cfg=None):
        if init_cfg is None:
            init_cfg = [dict(c) for c in self.DEFAULT_INIT_CFG]
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            check_choice('arch', arch.lower(), tuple(self.arch_zoo))
            settings = dict(self.arch_zoo[arch.lower()])
        elif isinstance(arch, dict):
            missing = {'embed_dims', 'depth', 'num_heads'} - set(arch)
            if missing:
                raise ValueError(f'arch dict misses keys {sorted(missing)}')
            settings = dict(arch)
        else:
            raise ValueError(f"arch must be one of {tuple(self.arch_zoo)} or "
                             f'a dict, got {arch!r}')
        check_choice('out_type', out_type, self.OUT_TYPES)
        check_choice('skip_ffn_input', skip_ffn_input, self.SKIP_FFN_INPUTS)
        if skip_ffn_input != 'all_tokens' and prune_mode != 'skip':
            raise ValueError(
                f"skip_ffn_input={skip_ffn_input!r} applies to "
                f"prune_mode='skip' only, got prune_mode={prune_mode!r} "
                f"(leave skip_ffn_input='all_tokens')")
        self.embed_dims = settings['embed_dims']
        self.depth = settings['depth']
        self.num_heads = settings['num_heads']
        self.mlp_ratio = settings.get('mlp_ratio', 5.0)
        stem_channels = settings.get('stem_channels', 128)
        self.use_c = (use_c1, use_c2, use_c3, use_c4)
        self.attn_mode = attn_mode
        self.out_type = out_type
        self.with_cp = with_cp
        self.norm_eval = norm_eval
        self.deploy = deploy
        self.prune_layers = resolve_prune_layers(prune_layers, self.depth)

        self.img_size = to_2tuple(img_size)
        if self.img_size[0] % 16 or self.img_size[1] % 16:
            raise ValueError(f'img_size must be divisible by 16 (one token '
                             f'per 16x16 pixels), got {img_size}')
        if use_c4:
            self.patch_embed = ConvStem(in_channels, stem_channels,
                                        self.embed_dims, deploy,
                                        stem_norm_cfg)
        else:
            self.patch_embed = nn.Conv2d(
                in_channels, self.embed_dims, 16, stride=16)
        self.patch_resolution = (self.img_size[0] // 16,
                                 self.img_size[1] // 16)
        num_patches = self.patch_resolution[0] * self.patch_resolution[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.pos_embed = nn.Parameter(
            torch.zeros(1, num_patches + 1, self.embed_dims))
        self.drop_after_pos = nn.Dropout(drop_rate)

        rates = torch.linspace(0, drop_path_rate, self.depth).tolist()
        self.layers = ModuleList([
            CEFormerBlock(
                self.embed_dims,
                self.num_heads,
                self.mlp_ratio,
                drop_rate,
                rates[i],
                norm_cfg,
                ffn_cfg=dict(
                    deploy=deploy,
                    use_dwconv=use_c2,
                    dilations=tuple(dilations) if use_c3 else ()),
                attn_cfg=dict(
                    attn_mode=attn_mode,
                    prune_tokens=i in self.prune_layers,
                    keep_ratio=keep_ratio,
                    score=score,
                    select=select,
                    train_draws=train_draws,
                    eval_seed=i,
                    prune_mode=prune_mode,
                    feature_map=feature_map,
                    pos_weight=pos_weight,
                    value_conv=use_c1),
                skip_ffn_input=skip_ffn_input) for i in range(self.depth)
        ])
        self.ln1 = build_norm_layer(norm_cfg, self.embed_dims)
        self._register_load_state_dict_pre_hook(self._prepare_pos_embed)
        if out_type == 'pyramid':
            self.pyramid = SimplePyramid(self.embed_dims, pyramid_levels)
        #: image tokens that each block processed, (B,) each (kept ones)
        self.token_counts = []

    def init_weights(self):
        super().init_weights()
        if not _is_pretrained(self.init_cfg):
            trunc_normal_(self.pos_embed, std=0.02)
            trunc_normal_(self.cls_token, std=0.02)

    def _prepare_pos_embed(self, state_dict, prefix, *args, **kwargs):
        """Load hook: a checkpoint trained at another ``img_size`` (say,
        classification at 224 and detection at 512) has a position
        embedding of another (square) grid; it is resized bicubically to
        this model's, as mmpretrain's VisionTransformer does on load."""
        name = prefix + 'pos_embed'
        if name not in state_dict:
            return
        loaded = state_dict[name]  # (1, 1 + Hs * Ws, C)
        side = math.isqrt(loaded.shape[1] - 1)
        if loaded.shape == self.pos_embed.shape or \
                loaded.shape[-1] != self.embed_dims or \
                side * side != loaded.shape[1] - 1:
            return  # equal, or a mismatch that load_state_dict reports
        MMLogger.get_current_instance().info(
            f'Resize the pos_embed shape from {tuple(loaded.shape)} to '
            f'{tuple(self.pos_embed.shape)}.')
        state_dict[name] = resize_pos_embed(
            loaded, (side, side),
            self.patch_resolution,
            mode='bicubic',
            num_extra_tokens=1)

    def switch_to_deploy(self):
        """Turn the model into its deploy form in place (mmpretrain's
        convention, as RepVGG / MobileOne): each FFN's C2/C3 branches
        merged into one depthwise kernel and the stem's BatchNorm folded
        into its convolution. Exact in eval mode (tested to 1e-5); the model
        can no longer be trained."""
        if isinstance(self.patch_embed, ConvStem):
            self.patch_embed.switch_to_deploy()
        for layer in self.layers:
            layer.ffn.switch_to_deploy()
        self.deploy = True
        self.eval()

    def train(self, mode: bool = True):
        if mode and getattr(self, 'deploy', False):
            raise RuntimeError(
                'CEFormer is in deploy form (switch_to_deploy() or '
                'deploy=True): its folded BatchNorm and merged kernels '
                'cannot be trained; build it with deploy=False to train')
        super().train(mode)
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def get_layer_depth(self, param_name: str, prefix: str = ''):
        """Layer-wise depth of a parameter, for mmpretrain's layer-wise
        learning-rate decay (``LearningRateDecayOptimWrapperConstructor``),
        by the rule of its ``VisionTransformer``: the stem, CLS token and
        position embedding are depth 0, block ``i`` is ``i + 1``, the rest
        (final norm, pyramid, anything outside ``prefix``) is the last.

        Returns:
            tuple[int, int]: the depth and the number of depths.
        """
        num_layers = self.depth + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name in ('cls_token', 'pos_embed') or \
                name.startswith('patch_embed'):
            return 0, num_layers
        if name.startswith('layers.'):
            return int(name.split('.')[1]) + 1, num_layers
        return num_layers - 1, num_layers

    def forward(self, x: Tensor):
        """x: (B, 3, H, W) -> a 1-tuple (``cls_token``: (B, C),
        ``avg_featmap``: (B, C), ``featmap``: (B, C, H/16, W/16)) or, for
        ``pyramid``, a tuple of maps at the ``pyramid_levels`` strides."""
        batch, _, height, width = x.shape
        if height % 16 or width % 16:
            raise ValueError(
                f'CEFormer needs input height and width divisible by 16, got '
                f'{height}x{width} (mmdet: use pad_size_divisor=32)')
        x = self.patch_embed(x)  # (B, C, H/16, W/16)
        grid_size = tuple(x.shape[-2:])
        x = x.flatten(2).transpose(1, 2)  # (B, Hg * Wg, C)
        x = torch.cat([self.cls_token.expand(batch, -1, -1), x], dim=1)
        x = x + separable_resize_pos_embed(
            self.pos_embed,
            self.patch_resolution,
            grid_size,
            mode='bicubic',
            num_extra_tokens=1)
        tokens = Tokens.full(self.drop_after_pos(x))
        seq_len = tokens.x.shape[1]
        self.token_counts = []
        # the FFNs' hidden grid of pruned sequences, one per forward
        grid_buffer = GridBuffer()
        for layer in self.layers:
            if self.with_cp and tokens.x.requires_grad:
                tokens = cp.checkpoint(
                    layer, tokens, seq_len, grid_size, use_reentrant=False)
            else:
                tokens = layer(tokens, seq_len, grid_size, grid_buffer)
            self.token_counts.append(tokens.processed)
        tokens = tokens._replace(x=self.ln1(tokens.x))
        return self._format(tokens, grid_size)

    def _format(self, tokens: Tokens, grid_size):
        if self.out_type == 'cls_token':
            return (tokens.x[:, 0], )
        if self.out_type == 'avg_featmap':
            image = tokens.x[:, 1:]
            if tokens.mask is None:
                return (image.mean(1), )
            weight = tokens.mask[:, 1:, None].to(image.dtype)
            return ((image * weight).sum(1) / weight.sum(1), )
        grid = tokens_to_grid(tokens.x, tokens.pos, tokens.mask, 1,
                              grid_size)  # (B, C, Hg, Wg)
        if self.out_type == 'featmap':
            # contiguous NCHW, as the pyramid's maps: mmcv's RoIAlign reads
            # memory as NCHW whatever the strides (docs/changelog.md)
            return (grid.contiguous(), )
        return self.pyramid(grid)
