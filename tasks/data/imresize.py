"""MATLAB's ``imresize`` (bicubic) in torch: the resizer every SR benchmark number assumes.

The method, from MATLAB's definition:

* cubic convolution kernel with a = -0.5 (Keys), support [-2, 2];
* when shrinking by ``scale < 1`` the kernel is stretched to ``k(scale * x) * scale`` (support
  4 / scale): this is MATLAB's antialiasing, without it the x4 bicubic baseline loses ~1 dB;
* output pixel ``i`` (1-based) samples the input at ``u = i / scale + (1 - 1 / scale) / 2``;
* weights are normalised to sum to one per output pixel; taps outside the image are folded
  back symmetrically (edge pixel repeated: ..., 2, 1 | 1, 2, ..., n | n, n-1, ...);
* the output size is ``ceil(in * scale)``; with one scale for both dimensions, height is
  resized first.

Each 1-D resize is a cached dense (out x in) matrix, so a batch (N, C, H, W) is resized by two
matmuls on any device. Computation stays in floating point across both passes, as in BasicSR's
port (MATLAB rounds uint8 inputs between the passes, which moves a few pixels by one level).
Neither PIL's nor torch's bicubic is this resizer.
"""

from __future__ import annotations

import functools
import math
import numpy as np
import torch

from tasks.utils.images import quantize


def cubic(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``bicubic``)."""
    ax = abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    inner = 1.5 * ax3 - 2.5 * ax2 + 1
    outer = -0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2
    return inner * (ax <= 1) + outer * ((ax > 1) & (ax <= 2))


@functools.lru_cache(maxsize=256)
def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The (out_len, in_len) matrix of MATLAB bicubic weights along one dimension (cached)."""
    width, kernel = 4.0, cubic
    if scale < 1 and antialias:
        width, kernel = 4.0 / scale, lambda t: scale * cubic(scale * t)  # stretched (antialiasing) kernel
    centre = np.arange(1, out_len + 1, dtype=np.float64) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(centre - width / 2)
    taps = int(math.ceil(width)) + 2  # MATLAB's count: covers the support for any centre
    index = left[:, None] + np.arange(taps)[None, :]  # 1-based input positions
    weights = kernel(centre[:, None] - index)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric padding: fold 1-based index into 0..in_len-1 with the edge pixel repeated.
    folded = np.mod(index.astype(np.int64) - 1, 2 * in_len)
    folded = np.where(folded < in_len, folded, 2 * in_len - 1 - folded)
    matrix = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(matrix, (np.repeat(np.arange(out_len), taps), folded.ravel()), weights.ravel())
    return torch.from_numpy(matrix).to(device=device, dtype=dtype)


def imresize(x: torch.Tensor, scale: float, antialias: bool = True) -> torch.Tensor:
    """MATLAB ``imresize(x, scale, 'bicubic')`` over the last two dimensions of ``x``.

    ``x``: (..., H, W), e.g. (N, C, H, W), on any device; the output is ``ceil(in * scale)``.
    Floating inputs are resized in their own dtype (half precision in float32); integer inputs
    (uint8 images) in float64. The result is not rounded: ``tasks.utils.images.quantize(out,
    peak=255)`` makes 8-bit images.
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError("imresize: expected a tensor of shape (..., H, W)")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"imresize: scale must be a positive number, got scale={scale!r}")
    compute = x.dtype if x.dtype in (torch.float32, torch.float64) else (
        torch.float32 if x.is_floating_point() else torch.float64)
    out = x.to(compute)
    for dim in (-2, -1) if scale != 1 else ():  # height first, as MATLAB (equal scales)
        n_in = out.shape[dim]
        n_out = math.ceil(round(n_in * scale, 9))  # round(): 1/3 * 3 = 0.99999...; MATLAB: ceil
        matrix = resize_matrix(n_in, n_out, scale, antialias, out.device, compute)
        out = matrix @ out if dim == -2 else out @ matrix.T
    return out.to(x.dtype) if x.is_floating_point() else out


def modcrop(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop the last two dimensions to multiples of ``scale``."""
    h, w = image.shape[-2:]
    return image[..., : h - h % scale, : w - w % scale]


def bicubic_degrade(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The standard SR degradation: MATLAB bicubic by 1/scale, rounded to uint8.

    ``hr``: uint8 (or 0..255 float) tensor (..., H, W) with H and W multiples of ``scale``.
    Returns uint8 (..., H / scale, W / scale), like an LR file on disk.
    """
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not a multiple of scale={scale} (use modcrop)")
    return quantize(imresize(hr.to(torch.float64), 1.0 / scale), peak=255)
