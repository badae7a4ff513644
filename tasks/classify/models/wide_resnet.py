"""Wide Residual Networks for CIFAR (Zagoruyko & Komodakis, 2016): pre-activation basic blocks of
widths 16k, 32k, 64k with dropout between their convolutions; as in the authors' code, a 1x1
projection shortcut reads the pre-activated input.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class WideBasicBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.bn1(x))
        # The projection shares the block's pre-activation; the identity path keeps the raw input.
        identity = x if self.shortcut is None else self.shortcut(pre)
        out = self.dropout(self.relu(self.bn2(self.conv1(pre))))
        return self.conv2(out) + identity


class WideResNet(nn.Module):
    """WRN-depth-k for 32x32 inputs."""

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 100, dropout: float = 0.0):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4 (e.g. 16, 28, 40), got {depth}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"WideResNet dropout must be in [0, 1), got {dropout}")
        blocks = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]

        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.layer1 = self._make_layer(16, widths[0], blocks, 1, dropout)
        self.layer2 = self._make_layer(widths[0], widths[1], blocks, 2, dropout)
        self.layer3 = self._make_layer(widths[1], widths[2], blocks, 2, dropout)
        self.bn = nn.BatchNorm2d(widths[2])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @staticmethod
    def _make_layer(in_planes: int, out_planes: int, blocks: int, stride: int, dropout: float) -> nn.Sequential:
        layers = [WideBasicBlock(in_planes, out_planes, stride, dropout)]
        layers += [WideBasicBlock(out_planes, out_planes, 1, dropout) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(self.relu(self.bn(x)))
        return self.fc(torch.flatten(x, 1))


def wrn28_8(num_classes: int = 100, dropout: float = 0.0) -> WideResNet:
    """WRN-28-8: 23.40M parameters with 100 classes (paper Table 3)."""
    return WideResNet(28, 8, num_classes=num_classes, dropout=dropout)


def wrn28_10(num_classes: int = 100, dropout: float = 0.0) -> WideResNet:
    """WRN-28-10: 36.54M parameters with 100 classes (paper Table 3)."""
    return WideResNet(28, 10, num_classes=num_classes, dropout=dropout)


def wrn40_10(num_classes: int = 100, dropout: float = 0.0) -> WideResNet:
    """WRN-40-10: 55.90M parameters with 100 classes (paper Table 3)."""
    return WideResNet(40, 10, num_classes=num_classes, dropout=dropout)
