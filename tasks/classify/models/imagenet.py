"""ImageNet networks of the BAM paper's Table 4.

torchvision's own definitions are used wherever torchvision has the network (never with
pretrained weights: nothing here downloads). The one network torchvision lacks is the paper's
"WideResNet18 (widen k)": ResNet18 whose four stage widths (64, 128, 256, 512) are multiplied by
k while the 64-channel stem stays as it is. It is built from torchvision's ``ResNet`` and
``BasicBlock`` so block code, initialisation and parameter names are torchvision's.
"""
from __future__ import annotations

from torch import nn
from torchvision import models
from torchvision.models.resnet import BasicBlock, ResNet

__all__ = ["WideResNet18", "wide_resnet18", "resnet18", "resnet50", "resnet101", "resnext50_32x4d",
           "mobilenet_v2", "squeezenet1_1"]


class WideResNet18(ResNet):
    """torchvision ResNet18 with stage widths (64k, 128k, 256k, 512k) and the 64-channel stem."""

    def __init__(self, widen: float, num_classes: int = 1000):
        if widen <= 0:
            raise ValueError(f"WideResNet18 widen factor must be positive, got {widen}")
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        widths = [int(round(base * widen)) for base in (64, 128, 256, 512)]
        # ResNet._make_layer grows from self.inplanes, so rebuild the stages from the stem width.
        self.inplanes = 64
        self.layer1 = self._make_layer(BasicBlock, widths[0], 2)
        self.layer2 = self._make_layer(BasicBlock, widths[1], 2, stride=2)
        self.layer3 = self._make_layer(BasicBlock, widths[2], 2, stride=2)
        self.layer4 = self._make_layer(BasicBlock, widths[3], 2, stride=2)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():  # torchvision's initialisation for the rebuilt modules
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def wide_resnet18(widen: float, num_classes: int = 1000) -> WideResNet18:
    """WideResNet18 (widen 1.5: 25.88M, widen 2.0: 45.62M parameters; paper Table 4)."""
    return WideResNet18(widen, num_classes=num_classes)


def resnet18(num_classes: int = 1000) -> nn.Module:
    return models.resnet18(weights=None, num_classes=num_classes)


def resnet50(num_classes: int = 1000) -> nn.Module:
    return models.resnet50(weights=None, num_classes=num_classes)


def resnet101(num_classes: int = 1000) -> nn.Module:
    return models.resnet101(weights=None, num_classes=num_classes)


def resnext50_32x4d(num_classes: int = 1000) -> nn.Module:
    return models.resnext50_32x4d(weights=None, num_classes=num_classes)


def mobilenet_v2(num_classes: int = 1000) -> nn.Module:
    return models.mobilenet_v2(weights=None, num_classes=num_classes)


def squeezenet1_1(num_classes: int = 1000) -> nn.Module:
    return models.squeezenet1_1(weights=None, num_classes=num_classes)
