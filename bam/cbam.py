"""CBAM, the Convolutional Block Attention Module (Woo et al., ECCV 2018).

Channel, then spatial attention, applied in sequence: ``x' = x * Mc(x)``, ``x'' = x' * Ms(x')``.
"""

from __future__ import annotations

import torch
from torch import nn


class CBAMChannelGate(nn.Module):
    """``sigmoid(MLP(AvgPool(x)) + MLP(MaxPool(x)))`` of shape ``B x C x 1 x 1``."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return torch.sigmoid(logits)[:, :, None, None]


class CBAMSpatialGate(nn.Module):
    """``sigmoid(BN(conv_kxk([max_c(x), mean_c(x)])))`` of shape ``B x 1 x H x W``."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"CBAM: kernel_size must be odd and >= 1 (got {kernel_size})")
        # No conv bias: the BN that follows has its own (as in the authors' code).
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.bn(self.conv(pooled)))


class CBAM(nn.Module):
    """CBAM with the ``(channels, reduction)`` interface shared with :class:`bam.BAM`."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ValueError(f"CBAM: channels and reduction must be >= 1 "
                             f"(got channels={channels}, reduction={reduction})")
        self.channels = channels
        self.channel = CBAMChannelGate(channels, reduction)
        self.spatial = CBAMSpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel(x)
        return x * self.spatial(x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"
