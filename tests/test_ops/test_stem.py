"""The conv stem in bands of rows (inference): the whole stem's values,
without its largest maps."""
import pytest
import torch
import torch.nn.functional as F
from helpers import images
from torch import nn

from mmceformer.ops import conv_stem_in_bands, stem_band_rows, stem_sizes


def whole_stem(x, conv, proj, act):
    """conv 7x7/2 (pad 3) -> act -> max-pool 3x3/2 (pad 1) -> conv 4x4/4,
    written out with torch's own ops."""
    first = act(F.conv2d(x, conv.weight, conv.bias, 2, 3))
    return proj(F.max_pool2d(first, 3, 2, 1))


def stem_convs(seed=0):
    torch.manual_seed(seed)
    return nn.Conv2d(3, 8, 7, 2, 3), nn.Conv2d(8, 12, 4, 4)


# sizes whose first map, pooled map and projection leave rows over (odd
# heights, a pooled height not a multiple of 4), whose last pooled row
# reads the row below the first map (61: 31 first-map rows for 4
# projection rows), or that fit one band
@pytest.mark.parametrize('size', [(64, 64), (63, 65), (61, 50), (100, 37),
                                  (33, 40), (17, 20)])
@pytest.mark.parametrize('rows', [1, 2, 3])
@pytest.mark.parametrize('batch', [1, 2])
# without the ReLU the first map is negative in places: a band padded
# with 0 instead of -inf for the pool would differ at the edges
@pytest.mark.parametrize('act', [F.relu, lambda t: t - 10])
def test_bands_equal_the_whole_stem(size, rows, batch, act):
    conv, proj = stem_convs()
    x = images(batch, size).contiguous(memory_format=torch.channels_last)

    def first(band):  # (B, 3, h, W) -> (B, 8, (h - 7) // 2 + 1, Wc)
        return act(F.conv2d(band, conv.weight, conv.bias, 2, (0, 3)))

    with torch.no_grad():
        expected = whole_stem(x, conv, proj, act)
        out = conv_stem_in_bands(x, first, proj, 8, rows)
    assert stem_sizes(size[0])[2] == expected.shape[2]
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_band_rows_follow_the_byte_budget():
    x = torch.zeros(2, 3, 64, 64)
    # a projection row is 8 first-map rows of 32 x 8 floats, per image
    row_bytes = 8 * 32 * 8 * 2 * 4
    assert stem_band_rows(x, 8, 3 * row_bytes) == 3
    assert stem_band_rows(x, 8, 3 * row_bytes - 1) == 2
    assert stem_band_rows(x, 8, 1) == 1  # at least one row


@pytest.mark.parametrize('call, match', [
    (lambda x: stem_band_rows(x, 8, 0), 'band_bytes must be >= 1, got 0'),
    (lambda x: conv_stem_in_bands(x, None, None, 8, 0),
     'rows must be >= 1, got 0'),
])
def test_bad_band_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.zeros(1, 3, 32, 32))
