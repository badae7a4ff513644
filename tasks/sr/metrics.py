"""PSNR and SSIM for super-resolution, batched in torch (CPU or GPU), float64 throughout.

Conventions (those of BasicSR's ``calculate_psnr`` / ``calculate_ssim``, which current SR papers follow):

* images are (N, 3, H, W) or (3, H, W) tensors with values in 0..255 (uint8 or float);
* ``y_channel=True`` scores the Y of MATLAB's ``rgb2ycbcr`` (BT.601, offset 16, not rounded);
* ``crop_border`` pixels are removed at every border before scoring (the SR scale, by convention);
* PSNR = 10 log10(255^2 / MSE); SSIM of Wang et al. (11x11 Gaussian, sigma 1.5, K1 0.01,
  K2 0.03, L 255), "valid" filtering only, mean of the map; channels averaged in RGB mode.

Every function returns one value per image (a float64 tensor of shape (N,)). Set-level numbers
are means of per-image values, as in the SR literature.

Two evaluation protocols are supported; tables must say which one they used (``PROTOCOLS``).
"""

from __future__ import annotations

from typing import Sequence

import torch

from tasks.data.imresize import bicubic_degrade, imresize, modcrop
from tasks.utils.images import quantize

PROTOCOLS: dict[str, str] = {
    "basicsr": "BasicSR: LR by MATLAB bicubic on RGB (uint8), gray replicated to RGB, "
               "Y of rgb2ycbcr (float), border crop = scale",
    "y-only": "older MATLAB: bicubic on the uint8 Y channel only, gray images on raw gray "
              "values, border crop = scale",
}
DEFAULT_PROTOCOL = "basicsr"

_Y_WEIGHTS = (65.481, 128.553, 24.966)  # BT.601 for R, G, B in [0, 1]; Y in [16, 235]


def _batch(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        image = torch.as_tensor(image)
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4:
        raise ValueError(f"{name}: expected (N, C, H, W) or (C, H, W), got shape {tuple(image.shape)}")
    return image.to(torch.float64)


def rgb_to_y(image: torch.Tensor) -> torch.Tensor:
    """Y of MATLAB's ``rgb2ycbcr`` for RGB in 0..255: (N, 3, H, W) -> (N, 1, H, W) float64.

    ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``, not rounded.
    """
    image = _batch(image)
    if image.shape[1] != 3:
        raise ValueError(f"rgb_to_y: expected 3 channels (RGB), got {image.shape[1]}")
    weights = image.new_tensor(_Y_WEIGHTS).view(1, 3, 1, 1) / 255.0
    return (image * weights).sum(dim=1, keepdim=True) + 16.0


def _prepare(sr, hr, crop_border: int, y_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    sr, hr = _batch(sr, "sr"), _batch(hr, "hr")
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr differ in shape: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    if y_channel and sr.shape[1] == 3:
        sr, hr = rgb_to_y(sr), rgb_to_y(hr)  # a 1-channel input is taken as luminance already
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        sr = sr[..., crop_border:-crop_border, crop_border:-crop_border]
        hr = hr[..., crop_border:-crop_border, crop_border:-crop_border]
    if sr.shape[-1] < 1 or sr.shape[-2] < 1:
        raise ValueError(f"crop_border={crop_border} leaves nothing of a {tuple(hr.shape[-2:])} image")
    return sr, hr


def psnr(sr: torch.Tensor, hr: torch.Tensor, crop_border: int, y_channel: bool = True) -> torch.Tensor:
    """Per-image PSNR in dB (peak 255); ``inf`` for identical images."""
    sr, hr = _prepare(sr, hr, crop_border, y_channel)
    mse = (sr - hr).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0**2 / mse)  # mse == 0 -> inf


def _filter_valid(x: torch.Tensor, taps: list[float], dim: int) -> torch.Tensor:
    """1-D correlation along ``dim`` without padding, as a sum of shifted slices: in float64
    this is several times faster than ``conv2d`` on the CPU and runs unchanged on the GPU."""
    length = x.shape[dim] - len(taps) + 1
    out = x.narrow(dim, 0, length) * taps[0]
    for offset, tap in enumerate(taps[1:], start=1):
        out.add_(x.narrow(dim, offset, length), alpha=tap)
    return out


def ssim(sr: torch.Tensor, hr: torch.Tensor, crop_border: int, y_channel: bool = True) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004), valid region only, channels averaged."""
    sr, hr = _prepare(sr, hr, crop_border, y_channel)
    n, c, h, w = sr.shape
    size = 11
    if h < size or w < size:
        raise ValueError(f"SSIM needs at least {size}x{size} pixels after the border crop, got {h}x{w}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    # The normalised 1-D Gaussian: MATLAB's fspecial('gaussian', 11, 1.5) is its outer product.
    window = torch.exp(-((torch.arange(size, dtype=torch.float64) - size // 2) ** 2) / (2 * 1.5**2))
    window = (window / window.sum()).tolist()
    # One separable "valid" filtering pass over the five moments of every channel.
    moments = torch.stack([sr, hr, sr * sr, hr * hr, sr * hr], dim=2)
    moments = _filter_valid(_filter_valid(moments, window, dim=-2), window, dim=-1)
    mu_x, mu_y, xx, yy, xy = moments.unbind(dim=2)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)


def luminance(image: torch.Tensor, protocol: str = DEFAULT_PROTOCOL,
              gray: bool | Sequence[bool] | torch.Tensor = False) -> torch.Tensor:
    """The channel a protocol scores: (N, 3, H, W) in 0..255 -> (N, 1, H, W) float64.

    ``basicsr``: Y of rgb2ycbcr, unrounded, for every image (gray files were replicated to RGB).
    ``y-only``: Y rounded to 8 bits like MATLAB's uint8 ``rgb2ycbcr``; for images whose file
    was single-channel (``gray``), the raw gray value (channel mean, rounded) instead.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown SR protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    image = _batch(image)
    y = rgb_to_y(image)
    if protocol == "basicsr":
        return y
    y = torch.floor(y + 0.5)
    raw = torch.floor(image.mean(dim=1, keepdim=True) + 0.5)
    gray = torch.as_tensor(gray, dtype=torch.bool, device=image.device).reshape(-1, 1, 1, 1)
    return torch.where(gray, raw, y)  # one flag for the batch, or one per image


def score_sr(sr: torch.Tensor, hr: torch.Tensor, scale: int, protocol: str = DEFAULT_PROTOCOL,
             gray: bool | Sequence[bool] | torch.Tensor = False,
             value_range: float = 255.0) -> dict[str, torch.Tensor]:
    """PSNR/SSIM of super-resolved images under a protocol (border crop = ``scale``).

    ``sr``, ``hr``: (N, 3, H, W) RGB with values in 0..``value_range`` (pass 1.0 for [0, 1]
    tensors). The SR output is rounded to 8 bits first, as when it is saved as a PNG (BasicSR
    scores the saved uint8 image). Returns ``{"psnr": (N,), "ssim": (N,)}``.
    """
    sr = quantize(_batch(sr, "sr"), value_range).double()
    hr = quantize(_batch(hr, "hr"), value_range).double()
    sr_l, hr_l = luminance(sr, protocol, gray), luminance(hr, protocol, gray)
    return {"psnr": psnr(sr_l, hr_l, scale, y_channel=False),
            "ssim": ssim(sr_l, hr_l, scale, y_channel=False)}


def bicubic_baseline(hr: torch.Tensor, scale: int, protocol: str = DEFAULT_PROTOCOL,
                     gray: bool | Sequence[bool] | torch.Tensor = False) -> dict[str, torch.Tensor]:
    """Scores of plain bicubic upscaling of the bicubic-downscaled HR, under a protocol.

    ``hr``: uint8 (or 0..255) RGB (N, 3, H, W); cropped to a multiple of ``scale`` here.
    ``basicsr``: RGB -> bicubic 1/scale -> uint8 -> bicubic x scale -> uint8 -> Y.
    ``y-only``: uint8 Y (raw gray for ``gray`` files) -> bicubic 1/scale -> uint8 -> x scale -> uint8.
    Returns ``{"psnr": (N,), "ssim": (N,)}``.
    """
    def down_and_up(image: torch.Tensor) -> torch.Tensor:
        return quantize(imresize(bicubic_degrade(image, scale).double(), float(scale)), peak=255)

    hr = quantize(modcrop(_batch(hr, "hr"), scale), peak=255)
    if protocol == "basicsr":
        return score_sr(down_and_up(hr), hr, scale, protocol)
    hr_l = luminance(hr, protocol, gray)
    up = down_and_up(hr_l).double()
    return {"psnr": psnr(up, hr_l, scale, y_channel=False),
            "ssim": ssim(up, hr_l, scale, y_channel=False)}
