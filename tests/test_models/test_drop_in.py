"""Drop-in contract: EAttentionViT and EAttentionSwin behave like mmpretrain's
VisionTransformer and SwinTransformer built with the same arguments in
every path users touch (module tree, parameter order, init rules,
checkpoint formats, with_cp, LoRA, layer-wise LR decay, frozen stages,
exception types); CEFormer offers the same surface where it applies."""
import collections

import pytest
import torch
from conftest import TINY
from helpers import images, in_mode, probe_loss
from mmengine.optim import build_optim_wrapper
from mmengine.runner import load_checkpoint
from mmpretrain.models.backbones import SwinTransformer, VisionTransformer
from mmpretrain.models.utils import MultiheadAttention, WindowMSA
from mmpretrain.registry import MODELS

from mmceformer.models import EAttentionViT, EAttentionSwin
from mmceformer.models.layers import EAttention
from mmceformer.models.layers.e_attention import ATTN_MODES

# mmpretrain class, ours, arguments that exercise drop path / layer scale
PAIRS = {
    'vit': (VisionTransformer, EAttentionViT,
            dict(
                arch='deit-small',
                img_size=64,
                drop_path_rate=0.1,
                layer_scale_init_value=1e-5)),
    'swin': (SwinTransformer, EAttentionSwin,
             dict(arch='tiny', img_size=64, drop_path_rate=0.1)),
}
REPLACED = {MultiheadAttention: EAttention, WindowMSA: EAttention}


def build_pair(kind, **kwargs):
    theirs_cls, ours_cls, args = PAIRS[kind]
    torch.manual_seed(0)
    theirs = theirs_cls(**args, **kwargs)
    torch.manual_seed(1)
    ours = ours_cls(**args, **kwargs)
    return theirs, ours


@pytest.mark.parametrize('kind', PAIRS)
def test_same_module_tree_and_parameter_order(kind):
    theirs, ours = build_pair(kind)
    their_tree = {n: type(m) for n, m in theirs.named_modules()}
    our_tree = {n: type(m) for n, m in ours.named_modules()}
    assert set(our_tree) == set(their_tree)
    for name, their_type in their_tree.items():
        expected = REPLACED.get(their_type, their_type)
        assert issubclass(our_tree[name], expected), name
    # Parameter order decides optimizer-state order: identical.
    assert [n for n, _ in ours.named_parameters()] == \
        [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == \
        [n for n, _ in theirs.named_buffers()]


@pytest.mark.parametrize('kind', PAIRS)
def test_every_parameter_initialised_by_the_same_rule(kind):
    """Statistics, not values: constant parameters (zeros, ones) equal,
    random ones with a standard deviation within 25%."""
    theirs, ours = build_pair(kind)
    theirs.init_weights()
    ours.init_weights()
    their_params = dict(theirs.named_parameters())
    for name, ours_p in ours.named_parameters():
        their_p = their_params[name].detach()
        ours_p = ours_p.detach()
        if their_p.std() == 0 or their_p.numel() == 1:
            torch.testing.assert_close(ours_p, their_p, msg=name)
        else:
            ratio = float(ours_p.std() / their_p.std())
            assert 0.75 < ratio < 1.33, (name, ratio)


def swin_tiny(cls, **kwargs):
    torch.manual_seed(0)
    return cls(**{**TINY['EAttentionSwin'], **kwargs})


def test_legacy_and_current_swin_checkpoints_load_strictly(tmp_path):
    theirs = swin_tiny(SwinTransformer)
    theirs.init_weights()
    current = theirs.state_dict()
    last = len(theirs.stages) - 1
    # mmpretrain's legacy format: final norm as norm.*, shift masks saved,
    # no version metadata.
    legacy = collections.OrderedDict(
        (k.replace(f'norm{last}.', 'norm.', 1) if k.startswith(f'norm{last}.'
                                                              ) else k, v)
        for k, v in current.items())
    legacy['stages.0.blocks.1.attn.attn_mask'] = torch.zeros(4, 16, 16)
    assert 'norm.weight' in legacy and f'norm{last}.weight' not in legacy
    for mode in ('softmax', 'eattn'):
        for state in (current, legacy):
            ours = swin_tiny(EAttentionSwin, attn_mode=mode)
            ours.load_state_dict(collections.OrderedDict(state), strict=True)
            for name, value in current.items():
                torch.testing.assert_close(ours.state_dict()[name], value)
    # The same through mmengine's loader, under a model prefix, as an
    # init_cfg Pretrained load does.
    path = tmp_path / 'legacy.pth'
    torch.save({'state_dict': legacy}, path)
    ours = swin_tiny(EAttentionSwin, attn_mode='eattn')
    load_checkpoint(ours, str(path), strict=True)
    torch.testing.assert_close(ours.state_dict()[f'norm{last}.weight'],
                               current[f'norm{last}.weight'])


def count_checkpoints(monkeypatch):
    calls = []
    real = torch.utils.checkpoint.checkpoint

    def counting(function, *args, **kwargs):
        calls.append(function)
        return real(function, *args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, 'checkpoint', counting)
    return calls


@pytest.mark.parametrize('mode', ATTN_MODES)
@pytest.mark.parametrize('name', ['EAttentionSwin', 'CEFormer'])
def test_with_cp_checkpoints_every_block_and_changes_nothing(
        name, mode, monkeypatch):
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = in_mode(
            MODELS.build(
                dict(
                    type=name,
                    attn_mode=mode,
                    with_cp=with_cp,
                    **TINY[name])),
            training=True)
        calls = count_checkpoints(monkeypatch)
        torch.manual_seed(1)  # same draws in both runs
        probe_loss(model(images())).backward()
        num_blocks = len(model.layers) if name == 'CEFormer' else sum(
            len(stage.blocks) for stage in model.stages)
        assert len(calls) == (num_blocks if with_cp else 0)
        grads.append([p.grad for p in model.parameters() if p.requires_grad])
        monkeypatch.undo()
    for plain, checkpointed in zip(*grads):
        torch.testing.assert_close(checkpointed, plain, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('mode', ATTN_MODES)
def test_swin_input_smaller_than_window_raises_assertion_in_every_mode(mode):
    """mmpretrain's exception type and message, whichever path runs."""
    model = swin_tiny(EAttentionSwin, attn_mode=mode, pad_small_map=False)
    with pytest.raises(AssertionError, match='smaller than the window'):
        model(images())


@pytest.mark.parametrize('name', sorted(TINY))
def test_mmpretrain_lora_builds_and_steps(name):
    lora = MODELS.build(
        dict(
            type='LoRAModel',
            module=dict(type=name, attn_mode='eattn', **TINY[name]),
            alpha=4,
            rank=2,
            targets=[dict(type='qkv')]))
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all('lora_' in n for n in trainable)
    before = {n: p.detach().clone() for n, p in lora.named_parameters()}
    optimizer = torch.optim.SGD(
        [p for p in lora.parameters() if p.requires_grad], lr=1.0)
    lora.train()
    probe_loss(lora(images())).backward()
    optimizer.step()
    for n, p in lora.named_parameters():
        changed = not torch.equal(p, before[n])
        if n not in trainable:
            assert not changed, n
    assert any(not torch.equal(p, before[n])
               for n, p in lora.named_parameters() if n in trainable)


def classifier(name):
    probe = in_mode(MODELS.build(dict(type=name, **TINY[name])), False)
    channels = probe(images())[-1].shape[1]
    return MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(type=name, attn_mode='eattn', **TINY[name]),
            neck=dict(type='GlobalAveragePooling')
            if name == 'EAttentionSwin' else None,
            head=dict(
                type='LinearClsHead', num_classes=10, in_channels=channels)))


@pytest.mark.parametrize('name', sorted(TINY))
def test_layer_wise_lr_decay_builds_and_steps(name):
    model = classifier(name)
    wrapper = build_optim_wrapper(
        model,
        dict(
            optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
            constructor='LearningRateDecayOptimWrapperConstructor',
            paramwise_cfg=dict(layer_decay_rate=0.5)))
    rates = {group['lr'] for group in wrapper.optimizer.param_groups}
    # one rate per depth: stem, every block (Swin: per stage), head
    assert len(rates) >= 4 and max(rates) == pytest.approx(1e-3)
    model.train()
    head_before = model.head.fc.weight.detach().clone()
    feats = model.extract_feat(images())
    wrapper.update_params(model.head.fc(feats[-1]).sum())
    assert not torch.equal(model.head.fc.weight, head_before)


@pytest.mark.parametrize('kind', PAIRS)
@pytest.mark.parametrize('frozen_stages', [1, 2])
def test_frozen_stages_freeze_the_same_parameters(kind, frozen_stages):
    theirs, ours = build_pair(kind, frozen_stages=frozen_stages)
    for model in (theirs, ours):
        model.train()  # mmpretrain re-freezes in train()

    def frozen(model):
        return {n for n, p in model.named_parameters() if not p.requires_grad}

    # ESwin in linear modes also freezes the unused bias tables; in
    # softmax mode the sets are mmpretrain's.
    assert frozen(ours) == frozen(theirs) and frozen(theirs)


@pytest.mark.parametrize('options', [
    dict(out_type='raw'),
    dict(with_cls_token=False, out_type='avg_featmap'),
    dict(final_norm=False),
    dict(pre_norm=True),
    dict(interpolate_mode='bilinear'),
])
def test_vit_options_match_mmpretrain(options):
    kwargs = dict(arch=TINY['EAttentionViT']['arch'], img_size=64, **options)
    torch.manual_seed(0)
    theirs = in_mode(VisionTransformer(**kwargs), False)
    ours = in_mode(EAttentionViT(**kwargs), False)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = images(size=(64, 80))
    for a, b in zip(ours(x), theirs(x)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_vit_bad_out_type_raises_like_mmpretrain():
    for cls in (VisionTransformer, EAttentionViT):
        with pytest.raises(ValueError, match='out_type'):
            cls(arch=TINY['EAttentionViT']['arch'],
                img_size=64,
                out_type='tokens')


DENSE = {
    'EAttentionViT': dict(out_type='pyramid'),
    'CEFormer': dict(out_type='pyramid'),
    'EAttentionSwin': dict(out_indices=(0, 1, 2, 3)),
}


@pytest.mark.parametrize('prune_mode', ['skip', 'drop'])
@pytest.mark.parametrize('mode', ATTN_MODES)
@pytest.mark.parametrize('name', sorted(TINY))
def test_dense_maps_are_contiguous_as_mmdet_backbones_return_them(
        name, mode, prune_mode):
    """mmdet's necks and mmcv's RoIAlign take the maps as mmdet's own
    backbones give them: contiguous NCHW. (RoIAlign reads memory as NCHW:
    a channels-last map, the token grid's own layout, gives wrong RoI
    features; test_detection checks that end to end.)"""
    if name == 'EAttentionSwin' and prune_mode == 'drop':
        pytest.skip('Swin keeps every map dense (skip only)')
    cfg = dict(type=name, attn_mode=mode, **TINY[name], **DENSE[name])
    if name != 'EAttentionSwin':
        cfg['prune_mode'] = prune_mode
    model = MODELS.build(cfg)
    model.eval()
    with torch.no_grad():
        maps = model(images())
    assert len(maps) == 4
    for m in maps:
        assert m.dim() == 4 and m.is_contiguous(), (m.shape, m.stride())


@pytest.mark.parametrize('prune_mode', ['skip', 'drop'])
@pytest.mark.parametrize('mode', ATTN_MODES)
@pytest.mark.parametrize('name', ['CEFormer', 'EAttentionViT'])
def test_featmap_is_contiguous_for_a_neck_of_ones_own(name, mode,
                                                      prune_mode):
    """``out_type='featmap'`` (a plain map, e.g. for a ViTDet-style neck
    of the user's) is contiguous NCHW too, so that it can reach mmcv's
    RoIAlign through any convolution without being misread."""
    cfg = dict(
        type=name,
        attn_mode=mode,
        prune_mode=prune_mode,
        **dict(TINY[name], out_type='featmap'))
    model = MODELS.build(cfg)
    model.eval()
    with torch.no_grad():
        maps = model(images())
    assert maps and all(m.dim() == 4 and m.is_contiguous() for m in maps)


@pytest.mark.parametrize('norm', ['LN2d', 'BN'])
def test_pyramid_stride4_branch_equals_its_layers_in_sequence(norm):
    """The stride-4 branch normalises in the channels-last layout of its
    first deconvolution (a speed-up): the same as running its four layers
    one after the other, on the token grid's channels-last view and on a
    contiguous map; the state dict keys are nn.Sequential's."""
    from mmceformer.models import SimplePyramid
    torch.manual_seed(0)
    pyramid = SimplePyramid(16, (0, ), norm_cfg=dict(type=norm)).eval()
    branch = pyramid.branches[0]
    assert set(pyramid.state_dict()) >= {'branches.0.0.weight',
                                         'branches.0.3.bias'}
    tokens = torch.randn(2, 1 + 5 * 7, 16)
    grid = tokens[:, 1:].reshape(2, 5, 7, 16).permute(0, 3, 1, 2)
    for x in (grid, grid.contiguous()):
        with torch.no_grad():
            want = x
            for layer in branch:
                want = layer(want)
            got, = pyramid(x)
        assert got.shape == (2, 4, 20, 28) and got.is_contiguous()
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
