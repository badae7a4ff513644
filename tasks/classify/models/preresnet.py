"""Pre-activation ResNet for CIFAR (He et al., "Identity Mappings in Deep Residual Networks").

``preresnet110`` is the 1.726M-parameter network of the BAM paper's Tables 2, 3 and 10: the widely
used CIFAR definition that builds every depth >= 44 from bottleneck blocks and still takes
(depth - 2) / 6 blocks per stage (so depth 110 is really 164 layers deep); the projection shortcut
is a bare 1x1 convolution of the block input.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class PreActBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        return out + identity


class PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        # Stride on the 3x3 convolution, as in the reference CIFAR code.
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + identity


class PreResNet(nn.Module):
    """Three-stage pre-activation ResNet for 32x32 inputs: basic blocks below depth 44, bottlenecks
    from there on."""

    def __init__(self, depth: int = 110, num_classes: int = 100):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"PreResNet depth must be 6n+2 (e.g. 20, 56, 110), got {depth}")
        block_cls = PreActBottleneck if depth >= 44 else PreActBasicBlock
        blocks = (depth - 2) // 6

        self.inplanes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.layer1 = self._make_layer(block_cls, 16, blocks, stride=1)
        self.layer2 = self._make_layer(block_cls, 32, blocks, stride=2)
        self.layer3 = self._make_layer(block_cls, 64, blocks, stride=2)
        self.bn = nn.BatchNorm2d(64 * block_cls.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64 * block_cls.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False)
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(self.relu(self.bn(x)))
        return self.fc(torch.flatten(x, 1))


def preresnet110(num_classes: int = 100) -> PreResNet:
    """PreResNet110, bottleneck variant: 1.726M parameters with 100 classes (paper Table 3)."""
    return PreResNet(110, num_classes=num_classes)
