"""Squeeze-and-Excitation (Hu et al., CVPR 2018), with the same interface as :class:`bam.BAM`."""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcitation(nn.Module):
    """``x * sigmoid(W2 relu(W1 AvgPool(x) + b1) + b2)``; hidden width ``max(C // r, 1)``."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ValueError(f"SqueezeExcitation: channels and reduction must be >= 1 "
                             f"(got channels={channels}, reduction={reduction})")
        hidden = max(channels // reduction, 1)
        self.channels = channels
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)
        # A module (not torch.sigmoid) so that capture_attention can read the scale with a hook.
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.act(self.fc1(x.mean(dim=(2, 3)))))
        return x * self.gate(scale[:, :, None, None])

    def extra_repr(self) -> str:
        return f"channels={self.channels}"
