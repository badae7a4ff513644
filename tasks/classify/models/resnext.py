"""ResNeXt-29 for CIFAR (Xie et al., 2017): a 64-channel 3x3 stem, three stages of (depth - 2) / 9
bottlenecks of widths 256, 512, 1024 whose grouped 3x3 convolution (``cardinality`` groups, inner
width ``cardinality * base_width * out / 256``) carries the stride.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class ResNeXtBottleneck(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, cardinality: int, base_width: int):
        super().__init__()
        width = cardinality * int(base_width * out_channels / 256)
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class CifarResNeXt(nn.Module):
    """ResNeXt-depth (cardinality x base_width d) for 32x32 inputs."""

    def __init__(self, depth: int = 29, cardinality: int = 8, base_width: int = 64, num_classes: int = 100):
        super().__init__()
        if depth < 11 or (depth - 2) % 9:
            raise ValueError(f"ResNeXt depth must be 9n+2 (e.g. 29), got {depth}")
        blocks = (depth - 2) // 9
        widths = [256, 512, 1024]

        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        in_channels = 64
        for index, (width, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
            layers = [ResNeXtBottleneck(in_channels if i == 0 else width, width, stride if i == 0 else 1,
                                        cardinality, base_width) for i in range(blocks)]
            self.add_module(f"layer{index}", nn.Sequential(*layers))
            in_channels = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnext29_8x64d(num_classes: int = 100) -> CifarResNeXt:
    """ResNeXt29 8x64d: 34.52M parameters with 100 classes (paper Table 3)."""
    return CifarResNeXt(29, cardinality=8, base_width=64, num_classes=num_classes)


def resnext29_16x64d(num_classes: int = 100) -> CifarResNeXt:
    """ResNeXt29 16x64d: 68.25M parameters with 100 classes (paper Table 3)."""
    return CifarResNeXt(29, cardinality=16, base_width=64, num_classes=num_classes)
