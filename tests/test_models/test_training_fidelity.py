"""What a long training run learns: the same token budget in training and
evaluation, real gradients, reproducible evaluation, the backbones' own
init and frozen BatchNorm statistics (issue: training fidelity).

Every backbone registered in ``mmceformer.testing.TINY_BACKBONES`` is
covered in its pruning modes."""
import pytest
import torch
from helpers import images, in_mode, peaked_attention, probe_loss
from mmpretrain.registry import MODELS

from mmceformer.models import CEFormer
from mmceformer.testing import TINY_BACKBONES

PRUNE_MODES = ('prune', 'eattn')
BACKBONES = sorted(TINY_BACKBONES)


def build(name, **kwargs):
    torch.manual_seed(0)
    model = MODELS.build(dict(type=name, **TINY_BACKBONES[name], **kwargs))
    model.init_weights()
    return model


def pruning_counts(model):
    """(blocks that sample, B) image tokens each pruning block processed."""
    counts = torch.stack([c.float() for c in model.token_counts])
    return counts[model.prune_layers]


def mean_counts(model, x, training, repeats):
    in_mode(model, training)
    total = 0
    with torch.no_grad():
        for seed in range(repeats):
            torch.manual_seed(seed)
            model(x)
            total = total + pruning_counts(model).mean(1)
    return total / repeats


@pytest.mark.parametrize('name', BACKBONES)
@pytest.mark.parametrize('mode', PRUNE_MODES)
def test_training_keeps_the_token_budget_of_evaluation(name, mode):
    """Systematic draws keep as many tokens per pruning block as the
    evaluation grid (independent draws kept 40% of it by the last of nine
    DeiT-S blocks), on flat (init) and peaked scores."""
    x = images(batch=4, size=(64, 64))
    for model in (build(name, attn_mode=mode),
                  peaked_attention(build(name, attn_mode=mode))):
        train = mean_counts(model, x, True, repeats=4)
        evaluation = mean_counts(model, x, False, repeats=1)
        # the grid is one offset of the systematic draws: a few tokens off
        # on a block that keeps few (Swin's 2x2 last stage)
        diff = (train - evaluation).abs()
        assert (diff <= (0.1 * evaluation).clamp(min=1)).all(), (
            train, evaluation)


@pytest.mark.parametrize('mode', PRUNE_MODES)
def test_independent_draws_option_keeps_fewer_tokens_in_training(mode):
    name = 'EAttentionViT'
    x = images(batch=4)
    systematic = build(name, attn_mode=mode)
    independent = build(name, attn_mode=mode, train_draws='independent')
    kept_sys = mean_counts(systematic, x, True, repeats=4)
    kept_ind = mean_counts(independent, x, True, repeats=4)
    assert (kept_ind < 0.85 * kept_sys).all(), (kept_ind, kept_sys)
    # evaluation is the grid for both
    torch.testing.assert_close(
        mean_counts(systematic, x, False, 1),
        mean_counts(independent, x, False, 1))


@pytest.mark.parametrize('name', BACKBONES)
def test_bad_train_draws_raises(name):
    with pytest.raises(ValueError, match='train_draws'):
        build(name, attn_mode='eattn', train_draws='stratified')


@pytest.mark.parametrize('name', BACKBONES)
@pytest.mark.parametrize('mode', PRUNE_MODES)
def test_backward_reaches_the_pruning_blocks(name, mode):
    """A loss whose gradient is not round-off (a fixed random projection)
    gives every pruning block's qkv a non-zero gradient."""
    model = in_mode(build(name, attn_mode=mode), True)
    probe_loss(model(images())).backward()
    named = dict(model.named_modules())
    qkvs = [
        m.qkv for m in named.values()
        if getattr(m, 'prune_tokens', False) and hasattr(m, 'qkv')
    ]
    assert qkvs
    for qkv in qkvs:
        assert qkv.weight.grad is not None
        assert qkv.weight.grad.abs().max() > 1e-6


@pytest.mark.parametrize('name', BACKBONES)
def test_gradient_agrees_with_finite_differences(name):
    """d loss / d (qkv of the first pruning block) along a random direction,
    against a central difference, in float64 and evaluation (grid draws:
    the kept set does not move for a step of 1e-6)."""
    model = peaked_attention(build(name, attn_mode='eattn')).double()
    in_mode(model, False)
    x = images(batch=2).double()
    qkv = next(m.qkv for m in model.modules()
               if getattr(m, 'prune_tokens', False))
    direction = torch.randn(
        qkv.weight.shape,
        generator=torch.Generator().manual_seed(1),
        dtype=torch.float64)
    probe_loss(model(x)).backward()
    analytic = (qkv.weight.grad * direction).sum()
    step = 1e-6
    with torch.no_grad():
        qkv.weight += step * direction
        up = probe_loss(model(x))
        qkv.weight -= 2 * step * direction
        down = probe_loss(model(x))
        qkv.weight += step * direction
    numeric = (up - down) / (2 * step)
    assert analytic.abs() > 1e-6
    torch.testing.assert_close(analytic, numeric, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize('name', BACKBONES)
@pytest.mark.parametrize('mode', PRUNE_MODES)
def test_batch_of_images_keeping_different_counts_equals_one_by_one(
        name, mode):
    """Images that keep different numbers of tokens (padding of different
    lengths in the batch) give the outputs they give alone."""
    model = in_mode(
        peaked_attention(
            build(name, attn_mode=mode), std=0.5, key_bias=-8.), False)
    x = images(batch=3, seed=3, size=(96, 96))
    with torch.no_grad():
        batched = model(x)
        counts = pruning_counts(model)  # (blocks, B)
        assert len(set(counts.sum(0).tolist())) > 1, counts
        for i in range(3):
            alone = model(x[i:i + 1])
            for b, a in zip(batched, alone):
                torch.testing.assert_close(
                    b[i:i + 1], a, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('name', BACKBONES)
def test_bf16_autocast_close_to_fp32(name):
    """bf16 autocast against fp32 on the same (skip-mode, so the kept set
    may differ without changing the map size) model: within 5% of the
    output's scale."""
    model = in_mode(build(name, attn_mode='eattn'), False)
    x = images(batch=2)
    with torch.no_grad():
        full = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            half = model(x)
    for f, h in zip(full, half):
        scale = f.abs().mean()
        err = (f - h.float()).abs().mean()
        assert err < 0.05 * scale, (err, scale)


@pytest.mark.parametrize('name', BACKBONES)
def test_random_score_is_reproducible_in_evaluation(name):
    # several pruning blocks: an early block's choice reaches the output
    model = in_mode(
        build(name, attn_mode='prune', score='random', prune_layers=[1, 2, 3]),
        False)
    x = images(batch=2)
    with torch.no_grad():
        first = model(x)
        torch.rand(10)  # moves the global generator
        second = model(x)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_random_score_differs_between_layers_in_evaluation():
    """Each layer its own seed: skip mode re-scores every token at every
    pruning block, and one seed for all would keep the same set at all."""
    model = in_mode(
        build(
            'EAttentionViT',
            attn_mode='prune',
            score='random',
            prune_mode='skip',
            out_type='featmap',
            prune_layers=[2, 3],
            keep_ratio=0.5), False)
    kept = []
    for layer in model.layers:
        layer.attn.register_forward_hook(
            lambda m, i, o: kept.append(o.index) if o.index is not None
            else None)
    with torch.no_grad():
        model(images(batch=1))
    assert len(kept) >= 2
    assert not torch.equal(kept[0], kept[1])


def test_ceformer_initialises_as_the_vit_recipe():
    """Without a config's init_cfg: Linear trunc-normal 0.02 and bias 0,
    LayerNorm 1 / 0, the stem as mmpretrain's ResNet stem. (PyTorch's
    default gave qkv a std of 0.0295 at 48 channels.)"""
    torch.manual_seed(0)
    model = CEFormer(
        arch=dict(embed_dims=384, depth=2, num_heads=8, stem_channels=32),
        img_size=64)
    model.init_weights()
    for linear in (model.layers[0].attn.qkv, model.layers[1].ffn.fc2):
        assert abs(linear.weight.std().item() - 0.02) < 0.002
        assert (linear.bias == 0).all()
    norm = model.layers[0].ln1
    assert (norm.weight == 1).all() and (norm.bias == 0).all()
    bn = model.patch_embed.bn
    assert (bn.weight == 1).all() and (bn.bias == 0).all()
    conv = model.patch_embed.conv.weight  # Kaiming fan_out: 2 / (C_out k^2)
    expected = (2 / (conv.shape[0] * 49))**0.5
    assert abs(conv.std().item() / expected - 1) < 0.1


def test_ceformer_init_cfg_replaces_the_default():
    model = build(
        'CEFormer',
        init_cfg=dict(type='Constant', layer='Linear', val=0.5, bias=0.1))
    qkv = model.layers[0].attn.qkv
    assert (qkv.weight == 0.5).all() and (qkv.bias == 0.1).all()


@pytest.mark.parametrize('norm_eval', [True, False])
def test_ceformer_norm_eval_freezes_batchnorm_statistics(norm_eval):
    model = build(
        'CEFormer',
        stem_norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=norm_eval)
    in_mode(model, True)
    bn = model.patch_embed.bn
    assert bn.training is not norm_eval
    assert model.layers[0].attn.training  # everything else trains
    before = bn.running_mean.clone()
    probe_loss(model(images())).backward()
    assert torch.equal(bn.running_mean, before) is norm_eval
    assert bn.weight.grad is not None  # the affine part still trains


def test_ceformer_stem_norm_cfg_builds_the_norm_it_names():
    model = build('CEFormer', stem_norm_cfg=dict(type='SyncBN'))
    assert isinstance(model.patch_embed.bn, torch.nn.SyncBatchNorm)
    with pytest.raises(KeyError):
        build('CEFormer', stem_norm_cfg=dict(type='NoSuchNorm'))


def test_swin_draws_never_land_on_padded_cells():
    """A 2x2 stage-4 map in a padded 4x4 window: R = 11 draws among 4 real
    cells (each with about a quarter of the score) keep all 4; with the
    padded cells as candidates, draws went to padding and fewer real tokens
    were kept. The mean query is over the real cells."""
    model = in_mode(build('EAttentionSwin', attn_mode='eattn'), False)
    with torch.no_grad():
        model(images(batch=2))
    last = model.token_counts[-1]
    assert (last == 4).all(), last
