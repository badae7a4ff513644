"""tasks.data.imresize against weights worked out by hand from MATLAB's definition."""

import math

import pytest
import torch

from tasks.data.imresize import bicubic_degrade, cubic, imresize, modcrop, resize_matrix
from tasks.utils.images import quantize

GEN = torch.Generator().manual_seed(0)


def test_cubic_kernel_values():
    # Keys, a = -0.5: 1.5|x|^3 - 2.5|x|^2 + 1 on [0, 1]; -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2 on (1, 2]
    x = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, -0.5])
    expected = [1.0, 0.8671875, 0.5625, 0.2265625, 0.0, -0.0703125, -0.0625, -0.0234375, 0.0, 0.0, 0.5625]
    assert cubic(x).tolist() == expected


# Downscaling by 2, first output pixel: centre u = 1 / 0.5 + 0.5 * (1 - 2) = 1.5 (1-based). The
# kernel is stretched to 0.5 * cubic(0.5 * d); taps at 1-based positions -2..5 have distances
# 3.5, 2.5, ..., -3.5 -> cubic(1.75, 1.25, 0.75, 0.25, ...) = -0.0234375, -0.0703125, 0.2265625,
# 0.8671875 (mirrored), summing to 2 -> weights / 2. Symmetric folding sends positions -2, -1, 0
# to 3, 2, 1 (1-based). Collecting per input pixel (0-based):
DOWN2_FIRST = {0: 0.11328125 + 0.43359375, 1: -0.03515625 + 0.43359375, 2: -0.01171875 + 0.11328125,
               3: -0.03515625, 4: -0.01171875}
# Upscaling by 2, first output pixel: u = 0.5 + 0.25 = 0.75; distances to positions -1..2 are
# 1.75, 0.75, -0.25, -1.25 -> -0.0234375, 0.2265625, 0.8671875, -0.0703125 (sum 1); positions
# -1, 0 fold to 2, 1:
UP2_FIRST = {0: 0.2265625 + 0.8671875, 1: -0.0234375 - 0.0703125}


def test_downscale_weights_by_hand():
    signal = torch.rand(1, 1, 1, 8, generator=GEN, dtype=torch.float64)
    out = imresize(signal, 0.5)
    assert out.shape == (1, 1, 1, 4)
    by_hand = sum(w * signal[0, 0, 0, i] for i, w in DOWN2_FIRST.items())
    assert out[0, 0, 0, 0].item() == pytest.approx(by_hand.item(), abs=1e-12)
    # symmetric: the last output pixel mirrors the first
    mirrored = sum(w * signal[0, 0, 0, 7 - i] for i, w in DOWN2_FIRST.items())
    assert out[0, 0, 0, -1].item() == pytest.approx(mirrored.item(), abs=1e-12)


def test_downscale_2d_is_separable_by_hand():
    image = torch.rand(8, 8, generator=GEN, dtype=torch.float64)
    weights = torch.zeros(8, dtype=torch.float64)
    for i, w in DOWN2_FIRST.items():
        weights[i] = w
    out = imresize(image, 0.5)
    assert out.shape == (4, 4)
    assert out[0, 0].item() == pytest.approx((weights @ image @ weights).item(), abs=1e-12)


def test_upscale_weights_by_hand():
    signal = torch.rand(4, 1, generator=GEN, dtype=torch.float64)  # a column: resize along H
    out = imresize(signal, 2.0)  # the single column is copied
    by_hand = sum(w * signal[i, 0] for i, w in UP2_FIRST.items())
    assert out[0, 0].item() == pytest.approx(by_hand.item(), abs=1e-12)


def test_upscaled_ramp_is_linear_inside():
    # the a = -0.5 cubic reproduces linear signals exactly away from the (mirrored) borders
    ramp = torch.arange(16, dtype=torch.float64).view(1, 16)
    out = imresize(ramp, 4.0)[0]  # the single row is copied
    centres = (torch.arange(1, 65, dtype=torch.float64) / 4 + 0.5 * (1 - 1 / 4)) - 1  # 0-based
    inside = (centres >= 2) & (centres <= 13)
    torch.testing.assert_close(out[inside], centres[inside], rtol=0, atol=1e-12)


def test_matrix_rows_sum_to_one_and_constants_stay():
    for n_in, scale in [(7, 0.5), (10, 1 / 3), (5, 4.0), (33, 0.25)]:
        n_out = math.ceil(n_in * scale)
        matrix = resize_matrix(n_in, n_out, scale)
        torch.testing.assert_close(matrix.sum(1), torch.ones(n_out, dtype=torch.float64))
    flat = torch.full((2, 3, 12, 9), 77.0, dtype=torch.float64)
    torch.testing.assert_close(imresize(flat, 1 / 3), torch.full((2, 3, 4, 3), 77.0, dtype=torch.float64))


def test_output_sizes_are_ceil_of_scaled_size():
    x = torch.zeros(1, 1, 7, 10)
    assert imresize(x, 0.5).shape[-2:] == (4, 5)
    assert imresize(x, 1 / 3).shape[-2:] == (3, 4)
    assert imresize(x, 3).shape[-2:] == (21, 30)


def test_antialiasing_widens_the_kernel():
    # at scale 1/4 the kernel spans 16 input pixels instead of 4
    wide = resize_matrix(64, 16, 0.25, antialias=True)
    narrow = resize_matrix(64, 16, 0.25, antialias=False)
    # centres fall half-way between input pixels: distances +-0.5, +-1.5, ... all inside the support
    assert (wide[8] != 0).sum() == 16
    assert (narrow[8] != 0).sum() == 4
    # stripes of period 4 (one bright column in four, mean 63.75) average out with antialiasing,
    # alias to a wrong level without it: the 4 taps see -0.0625 * 255 = -15.9375
    stripes = ((torch.arange(64) % 4 == 0).double() * 255).view(1, -1).repeat(8, 1)
    inside = imresize(stripes, 0.25)[:, 2:-2]
    torch.testing.assert_close(inside, torch.full_like(inside, 63.75))
    aliased = imresize(stripes, 0.25, antialias=False)
    torch.testing.assert_close(aliased, torch.full_like(aliased, -15.9375))


def test_batched_dtype_and_integer_inputs():
    x = torch.rand(3, 2, 20, 16, generator=GEN, dtype=torch.float64) * 255
    batched = imresize(x, 0.25)
    for n in range(3):
        torch.testing.assert_close(imresize(x[n], 0.25), batched[n])
    torch.testing.assert_close(imresize(x.float(), 0.25).double(), batched, rtol=0, atol=1e-3)
    as_uint8 = imresize(x.round().to(torch.uint8), 0.25)
    assert as_uint8.dtype == torch.float64
    torch.testing.assert_close(as_uint8, imresize(x.round(), 0.25))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    x = torch.rand(2, 3, 40, 36, generator=GEN, dtype=torch.float64)
    torch.testing.assert_close(imresize(x.cuda(), 0.25).cpu(), imresize(x, 0.25))


def test_quantize_rounds_half_away_from_zero_and_clamps():
    values = torch.tensor([0.5, 1.5, 2.5, 2.4999, -0.7, 254.5, 300.0], dtype=torch.float64)
    # torch.round would give 0, 2, 2
    assert quantize(values, peak=255).tolist() == [1, 2, 3, 2, 0, 255, 255]


def test_bicubic_degrade_and_modcrop():
    hr = torch.randint(0, 256, (1, 3, 13, 18), generator=GEN, dtype=torch.uint8)
    with pytest.raises(ValueError, match="scale=4"):
        bicubic_degrade(hr, 4)
    cropped = modcrop(hr, 4)
    assert cropped.shape[-2:] == (12, 16)
    lr = bicubic_degrade(cropped, 4)
    assert lr.dtype == torch.uint8 and lr.shape[-2:] == (3, 4)
    torch.testing.assert_close(lr, quantize(imresize(cropped.double(), 0.25), peak=255))


def test_bad_arguments():
    with pytest.raises(ValueError, match="scale"):
        imresize(torch.zeros(4, 4), -1)
    with pytest.raises(ValueError, match="scale"):
        imresize(torch.zeros(4, 4), float("inf"))
