"""CEFormer's conv stem in inference: bands of rows where they equal the
whole map, the whole map everywhere else."""
import pytest
import torch
from helpers import NewTensors, images, in_mode

from mmceformer.models import CEFormer
from mmceformer.models.backbones.ceformer import ConvStem


def ceformer(**kwargs):
    torch.manual_seed(0)
    model = CEFormer(
        arch=dict(embed_dims=32, depth=2, num_heads=2, stem_channels=16),
        img_size=128,
        **kwargs)
    with torch.no_grad():  # running statistics that are not the identity
        model.patch_embed.bn.running_mean.uniform_(-1, 1)
        model.patch_embed.bn.running_var.uniform_(0.5, 2)
    return in_mode(model, False)


@pytest.mark.parametrize('deploy', [False, True])
def test_ceformer_inference_in_bands_equals_the_whole_stem(deploy):
    """A first map of 64 x 64 x 16 floats (256 KiB) in bands of 64 KiB:
    4 bands, no new tensor as large as the first map (neither it nor the
    max-pool's index map exists whole); the outputs are those of the whole
    stem. Before the bands, the first map was made whole."""
    model = ceformer()
    if deploy:
        model.switch_to_deploy()
    x = images(1, (128, 128))
    first_map = 16 * 64 * 64
    with torch.no_grad():
        expected = model(x)[0]
        model.patch_embed.band_bytes = 64 * 2**10
        # 8 projection rows, 2 a band
        assert model.patch_embed._band_rows(x) == 2
        with NewTensors() as made:
            stem_out = model.patch_embed(x)
        out = model(x)[0]
    assert max(made.sizes) < first_map  # the input's copy is the largest
    assert 16 * 32 * 32 in made.sizes  # the pooled map
    assert stem_out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_whole_stem_in_training_with_autograd_and_per_image_norms():
    """Bands only where they equal the whole map: not in training (batch
    statistics), with autograd, while tracing, with a norm over space
    (GroupNorm) or a BatchNorm without running statistics."""
    x = images(1, (128, 128))
    stem = ConvStem(3, 16, 32)
    stem.band_bytes = 1
    with torch.no_grad():  # training alone rules the bands out
        assert in_mode(stem, True)._band_rows(x) == 0
    stem.eval()
    with torch.no_grad():
        assert stem._band_rows(x) == 1
    assert stem._band_rows(x) == 0  # autograd on
    with torch.no_grad():
        rows = []

        def record(t):
            rows.append(stem._band_rows(t))
            return t * 2

        torch.jit.trace(record, x, check_trace=False)
        assert rows == [0]
        for norm_cfg in (dict(type='GN', num_groups=4),
                         dict(type='BN', track_running_stats=False)):
            other = ConvStem(3, 16, 32, norm_cfg=norm_cfg).eval()
            other.band_bytes = 1
            assert other._band_rows(x) == 0
        # one band would hold the whole map: no bands
        stem.band_bytes = 2**30
        assert stem._band_rows(x) == 0
