"""Float images to 8-bit pixels, one rounding rule for every picture and every metric."""

from __future__ import annotations

import numpy as np
import torch


def quantize(x: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """``x`` on a 0..``peak`` scale as uint8: MATLAB's uint8 cast (round half up, clamp to 0..255),
    the rounding of the SR evaluation convention. Computed in float64 so that no value near a
    half-level rounds the wrong way."""
    if x.dtype == torch.uint8:
        return x
    scaled = x.to(torch.float64) * (255.0 / peak)  # exact for peak 255: x * 1.0 is x
    return torch.floor(scaled + 0.5).clamp_(0, 255).to(torch.uint8)


def to_hwc_uint8(image: torch.Tensor | np.ndarray, peak: float = 1.0) -> np.ndarray:
    """A CxHxW (or 1xCxHxW) image tensor on a 0..``peak`` scale, or an HxWx3 uint8 array, as an
    HxWx3 uint8 array (for PNG files, panels and W&B)."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(f"expected an HxWx3 uint8 array, got {image.dtype} {image.shape}")
        return image
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    if image.dim() != 3:
        raise ValueError(f"expected a CxHxW image, got shape {tuple(image.shape)}")
    return quantize(image.detach(), peak).permute(1, 2, 0).cpu().numpy()
