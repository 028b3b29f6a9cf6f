"""EAttentionViT: mmpretrain's ViT/DeiT with E-Attention."""
import pytest
import torch
from helpers import count_scatters, images, in_mode, probe_loss
from mmpretrain.models.backbones import VisionTransformer

from mmceformer.models import EAttentionViT

TINY = dict(embed_dims=48, num_layers=5, num_heads=3, feedforward_channels=96)
MODES = ('softmax', 'linear', 'prune', 'eattn')


def tiny(**kwargs):
    torch.manual_seed(0)
    kwargs.setdefault('arch', TINY)
    kwargs.setdefault('img_size', 64)
    return EAttentionViT(**kwargs)


@pytest.mark.parametrize('arch', ['deit-tiny', 'deit-small', 'deit-base'])
def test_state_dict_keys_are_mmpretrain_and_load_strictly(arch):
    ours = EAttentionViT(arch=arch, attn_mode='eattn')
    theirs = VisionTransformer(arch=arch)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)


@pytest.mark.parametrize('out_type', ['cls_token', 'featmap', 'avg_featmap'])
def test_softmax_equals_mmpretrain(out_type):
    theirs = VisionTransformer(
        arch=TINY, img_size=64, out_type=out_type, out_indices=[2, 4])
    ours = tiny(out_type=out_type, out_indices=[2, 4])
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.eval()
    ours.eval()
    x = images(size=(64, 80))  # non-square: pos_embed is resized
    for a, b in zip(ours(x), theirs(x)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('out_type,prune_mode', [('cls_token', 'drop'),
                                                 ('pyramid', 'skip')])
def test_every_mode_forward_backward(mode, out_type, prune_mode):
    model = tiny(attn_mode=mode, out_type=out_type, prune_mode=prune_mode)
    model.train()
    outs = model(images(size=(64, 96)))
    probe_loss(outs).backward()
    for param in (model.patch_embed.projection.weight,
                  model.layers[-1].attn.qkv.weight):
        assert param.grad is not None and param.grad.abs().max() > 1e-6
    if out_type == 'pyramid':
        assert [o.shape[-2:] for o in outs] == [(16, 24), (8, 12), (4, 6),
                                                (2, 3)]
        assert [o.shape[1] for o in outs] == [12, 24, 48, 48]


@pytest.mark.parametrize('mode', ['prune', 'eattn'])
def test_drop_mode_shrinks_tokens_at_prune_layers(mode):
    model = in_mode(tiny(attn_mode=mode, keep_ratio=0.5), training=False)
    model(images())
    counts = torch.stack(model.token_counts)  # (layers, B)
    assert (counts[:3] == 16).all()  # 64/16 = 4x4 tokens, no pruning yet
    assert (counts[3:] <= 8).all()  # R = round(0.5 * 16)
    assert (counts[4] <= counts[3]).all()


def test_skip_mode_keeps_full_grid_and_changes_output():
    skip = in_mode(
        tiny(
            attn_mode='eattn',
            prune_mode='skip',
            out_type='featmap',
            keep_ratio=0.3),
        training=False)
    full = in_mode(
        tiny(attn_mode='linear', out_type='featmap'), training=False)
    full.load_state_dict(skip.state_dict())
    x = images()
    out_skip, out_full = skip(x)[0], full(x)[0]
    assert out_skip.shape == out_full.shape == (2, 48, 4, 4)
    processed = torch.stack(skip.token_counts)  # (layers, B)
    assert (processed[:3] == 16).all() and (processed[3:] <= 5).all()
    assert not torch.allclose(out_skip, out_full)


@pytest.mark.parametrize('mode', ['prune', 'eattn'])
def test_eval_deterministic_and_batch_independent(mode):
    model = in_mode(tiny(attn_mode=mode, keep_ratio=0.5), training=False)
    x = images(batch=3)
    first, second = model(x)[0], model(x)[0]
    torch.testing.assert_close(first, second)
    alone = model(x[1:2])[0]
    torch.testing.assert_close(first[1:2], alone, atol=1e-5, rtol=1e-5)


def test_pretrained_classifier_checkpoint_loads_with_prefix(tmp_path):
    from mmpretrain.models import ImageClassifier
    classifier = ImageClassifier(
        backbone=dict(type='VisionTransformer', arch=TINY, img_size=64),
        head=dict(type='LinearClsHead', num_classes=5, in_channels=48))
    path = tmp_path / 'deit.pth'
    torch.save({'state_dict': classifier.state_dict()}, path)
    model = tiny(
        attn_mode='eattn',
        init_cfg=dict(
            type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    model.init_weights()
    for name, value in classifier.backbone.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value)


@pytest.mark.parametrize('kwargs,match', [
    (dict(attn_mode='fast'), 'attn_mode'),
    (dict(prune_mode='hide'), 'prune_mode'),
    (dict(keep_ratio=0), 'keep_ratio'),
    (dict(prune_layers=[7]), 'prune_layers'),
    (dict(out_type='pyramid', out_indices=[1, 2]), 'out_indices'),
    (dict(out_type='raw', attn_mode='eattn'), 'raw'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_skip_mode_writes_back_without_assembling_an_ffn_input(monkeypatch):
    """The token-wise FFN of a pruning block in skip mode runs on the kept
    tokens: one scatter per pruning block (its output back into the full
    sequence), not a second one for a context that it does not read."""
    calls = count_scatters(monkeypatch)
    model = in_mode(
        tiny(attn_mode='eattn', prune_mode='skip', prune_layers=[2, 4],
             out_type='featmap'),
        training=False)
    with torch.no_grad():
        out = model(images(batch=1))[0]
    assert out.shape == (1, 48, 4, 4)
    assert len(calls) == 2
