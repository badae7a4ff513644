"""ResNet50 / ResNet101 for 32x32 inputs (the CIFAR variant used by the BAM paper).

The network is torchvision's ImageNet ResNet with only the stem changed: a 3x3 stride-1
convolution replaces the 7x7 stride-2 one and the max-pool is removed, so a 32x32 image reaches
the last stage at 4x4 and the (adaptive) global average pool is the usual 4x4 pool. Reusing
torchvision's class keeps the block definitions, initialisation and parameter names identical.
"""
from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

__all__ = ["CifarResNet", "cifar_resnet50", "cifar_resnet101"]


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
