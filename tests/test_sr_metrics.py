"""tasks.sr.metrics against textbook formulas, scikit-image, and the published bicubic numbers."""

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from tasks.data.images import list_images, read_image
from tasks.data.imresize import bicubic_degrade, imresize, modcrop
from tasks.data.sr import SRBenchmark
from tasks.sr.metrics import (PROTOCOLS, bicubic_baseline, luminance, psnr, rgb_to_y, score_sr,
                              ssim)
from tasks.utils.images import quantize

RNG = np.random.default_rng(0)


def _pair(n=2, h=40, w=36, noise=12.0):
    hr = RNG.integers(0, 256, (n, 3, h, w)).astype(np.float64)
    sr = np.clip(np.round(hr + RNG.normal(0, noise, hr.shape)), 0, 255)
    return sr, hr


def _y_numpy(img):  # img: (3, H, W) in 0..255
    r, g, b = img / 255.0
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def test_rgb_to_y_known_colours():
    colours = torch.tensor([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]],
                           dtype=torch.uint8).T.reshape(1, 3, 1, 5)
    y = rgb_to_y(colours).flatten().tolist()
    assert y == pytest.approx([16.0, 235.0, 81.481, 144.553, 40.966], abs=1e-9)
    assert rgb_to_y(colours).dtype == torch.float64


@pytest.mark.parametrize("y_channel", [True, False])
def test_psnr_matches_textbook(y_channel):
    sr, hr = _pair()
    ours = psnr(torch.tensor(sr), torch.tensor(hr), crop_border=4, y_channel=y_channel)
    for n in range(2):
        a, b = (_y_numpy(sr[n])[None], _y_numpy(hr[n])[None]) if y_channel else (sr[n], hr[n])
        mse = np.mean((a[:, 4:-4, 4:-4] - b[:, 4:-4, 4:-4]) ** 2)
        assert ours[n].item() == pytest.approx(10 * np.log10(255.0**2 / mse), abs=1e-10)
    assert psnr(torch.tensor(hr), torch.tensor(hr), 0)[0].item() == float("inf")


def test_ssim_y_matches_scikit_image():
    # skimage filters the whole image (reflect padding) and averages the map without the
    # (win_size - 1) / 2 = 5 pixels at each border: exactly the "valid" region used here.
    sr, hr = _pair(h=48, w=52)
    ours = ssim(torch.tensor(sr), torch.tensor(hr), crop_border=4, y_channel=True)
    for n in range(2):
        a, b = _y_numpy(sr[n])[4:-4, 4:-4], _y_numpy(hr[n])[4:-4, 4:-4]
        ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=255)
        assert ours[n].item() == pytest.approx(ref, abs=1e-9)


def test_ssim_rgb_averages_channels_like_scikit_image():
    sr, hr = _pair(n=1, h=30, w=33, noise=30)
    ours = ssim(torch.tensor(sr), torch.tensor(hr), crop_border=0, y_channel=False)
    ref = structural_similarity(sr[0], hr[0], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=255, channel_axis=0)
    assert ours.item() == pytest.approx(ref, abs=1e-9)
    assert ssim(torch.tensor(hr), torch.tensor(hr), 0).item() == pytest.approx(1.0, abs=1e-12)


def test_batch_equals_single_and_uint8_equals_float():
    sr, hr = _pair(n=3)
    batch = ssim(torch.tensor(sr), torch.tensor(hr), 2)
    single = [ssim(torch.tensor(sr[n]), torch.tensor(hr[n]), 2).item() for n in range(3)]
    assert batch.tolist() == pytest.approx(single, abs=1e-12)
    as_uint8 = psnr(torch.tensor(sr).to(torch.uint8), torch.tensor(hr).to(torch.uint8), 2)
    torch.testing.assert_close(as_uint8, psnr(torch.tensor(sr), torch.tensor(hr), 2))


def test_errors():
    sr, hr = _pair()
    with pytest.raises(ValueError, match="shape"):
        psnr(torch.tensor(sr)[..., :-1], torch.tensor(hr), 4)
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.tensor(sr), torch.tensor(hr), 15)
    with pytest.raises(ValueError, match="basicsr"):
        score_sr(torch.tensor(sr), torch.tensor(hr), 4, protocol="matlab")
    assert set(PROTOCOLS) == {"basicsr", "y-only"}


def test_luminance_protocols():
    image = torch.tensor([[[[10.0]], [[200.0]], [[30.0]]]])  # one RGB pixel
    y = 16 + (65.481 * 10 + 128.553 * 200 + 24.966 * 30) / 255
    assert luminance(image, "basicsr").item() == pytest.approx(y)
    assert luminance(image, "y-only").item() == np.floor(y + 0.5)
    gray = torch.full((1, 3, 1, 1), 77.0)
    assert luminance(gray, "y-only", gray=True).item() == 77.0  # raw gray value
    assert luminance(gray, "basicsr", gray=True).item() == pytest.approx(16 + 219 / 255 * 77)


def test_score_sr_rounds_sr_and_accepts_unit_range():
    sr, hr = _pair(n=1)
    base = score_sr(torch.tensor(sr), torch.tensor(hr), 4)
    unit = score_sr(torch.tensor(sr) / 255, torch.tensor(hr) / 255, 4, value_range=1.0)
    torch.testing.assert_close(unit["psnr"], base["psnr"])
    off = score_sr(torch.tensor(sr) + 0.3, torch.tensor(hr), 4)  # rounded back to the same uint8
    torch.testing.assert_close(off["ssim"], base["ssim"])


# -- acceptance: bicubic x4 on the real Set5/Set14 against BasicSR's own numbers (data README) ----

PUBLISHED = {  # (set, protocol): (PSNR, SSIM)
    ("Set5", "basicsr"): (28.4314, 0.8113), ("Set14", "basicsr"): (26.0918, 0.7050),
    ("Set5", "y-only"): (28.4183, 0.8103), ("Set14", "y-only"): (25.9987, 0.7018),
}


RGB_PUBLISHED = {"Set5": (26.6955, 0.7734)}  # same, scored on RGB (Set14: 24.4654 / 0.6640; CPU time)


@pytest.mark.parametrize("name", ["Set5", "Set14"])
def test_bicubic_x4_baseline_matches_published(sr_data_root, name):
    files = list_images(sr_data_root / "sr" / name)
    images = [read_image(f) for f in files]
    gray = [im.ndim == 2 for im in images]
    assert sum(gray) == (1 if name == "Set14" else 0)  # Set14's bridge.png is single-channel
    for protocol in PROTOCOLS:
        scores = []
        for image, is_gray in zip(images, gray):
            rgb = np.repeat(image[:, :, None], 3, 2) if is_gray else image
            hr = torch.from_numpy(rgb).permute(2, 0, 1)
            scores.append(bicubic_baseline(hr, 4, protocol, gray=is_gray))
        mean_psnr = np.mean([s["psnr"].item() for s in scores])
        mean_ssim = np.mean([s["ssim"].item() for s in scores])
        want_psnr, want_ssim = PUBLISHED[name, protocol]
        assert mean_psnr == pytest.approx(want_psnr, abs=1e-3), protocol
        assert mean_ssim == pytest.approx(want_ssim, abs=1e-4), protocol
    if name not in RGB_PUBLISHED:
        return
    # RGB instead of Y (checks the channel-averaged SSIM): the upscaled image made step by step
    rgb_scores = []
    for image in images:
        rgb = np.repeat(image[:, :, None], 3, 2) if image.ndim == 2 else image
        hr = modcrop(torch.from_numpy(rgb).permute(2, 0, 1)[None], 4)
        up = quantize(imresize(bicubic_degrade(hr, 4).double(), 4.0), peak=255)
        rgb_scores.append((psnr(up, hr, 4, y_channel=False).item(), ssim(up, hr, 4, y_channel=False).item()))
    assert np.mean(rgb_scores, axis=0) == pytest.approx(RGB_PUBLISHED[name], abs=1e-4)


def test_benchmark_items_scored_with_bicubic_give_the_same_numbers(sr_data_root):
    # the model path: SRBenchmark LR (float [0, 1]) -> upscaled -> score_sr == bicubic_baseline
    bench = SRBenchmark("Set5", 4, data_root=sr_data_root)
    psnrs = []
    for item in bench:
        sr = imresize(item["lr"][None].double(), 4.0)
        psnrs.append(score_sr(sr, item["hr"][None], 4, value_range=1.0)["psnr"].item())
    assert np.mean(psnrs) == pytest.approx(PUBLISHED["Set5", "basicsr"][0], abs=1e-3)
