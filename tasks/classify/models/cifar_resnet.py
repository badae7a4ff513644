"""ResNet50 / ResNet101 for 32x32 inputs (the BAM paper's CIFAR variant), and the small ResNet-20.

torchvision's ResNet with only the stem changed (a 3x3 stride-1 convolution, no max-pool), so
block definitions, initialisation and parameter names stay torchvision's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet


class CifarResNet(ResNet):
    """torchvision ``ResNet`` with a 3x3 stride-1 stem and no max-pool."""

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int], num_classes: int = 100, **kwargs):
        super().__init__(block, layers, num_classes=num_classes, **kwargs)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()


def cifar_resnet50(num_classes: int = 100) -> CifarResNet:
    """ResNet50 with the CIFAR stem: 23.71M parameters with 100 classes (paper Table 3)."""
    return CifarResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)


def cifar_resnet101(num_classes: int = 100) -> CifarResNet:
    """ResNet101 with the CIFAR stem: 42.70M parameters with 100 classes (paper Table 3)."""
    return CifarResNet(Bottleneck, [3, 4, 23, 3], num_classes=num_classes)


class _ShortcutA(nn.Module):
    """He et al.'s option A: subsample and zero-pad the new channels; no parameters."""

    def __init__(self, out_channels: int, stride: int):
        super().__init__()
        self.out_channels, self.stride = out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - x.shape[1]))


class SmallCifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016, Sec. 4.2): three stages of 16/32/64 channels, 6n+2 layers
    (no network of the BAM paper: the small one of CPU demos and quick checks)."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 100):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        for index, width in enumerate((16, 32, 64), start=1):
            stride = 1 if index == 1 else 2  # later stages halve the size, double the width
            shortcut = _ShortcutA(width, stride) if stride > 1 else None
            blocks = [BasicBlock(width // stride, width, stride, shortcut)]
            blocks += [BasicBlock(width, width) for _ in range(1, blocks_per_stage)]
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet20(num_classes: int = 100) -> SmallCifarResNet:
    """ResNet-20 (n = 3): 0.27M parameters with 10 classes."""
    return SmallCifarResNet(3, num_classes=num_classes)
