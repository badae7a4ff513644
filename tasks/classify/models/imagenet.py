"""ImageNet networks of the BAM paper's Table 4: torchvision's own definitions (never with
pretrained weights), and the one network torchvision lacks, the paper's "WideResNet18 (widen k)"."""
from __future__ import annotations

from typing import Callable

from torch import nn
from torchvision import models
from torchvision.models.resnet import BasicBlock, ResNet


def torchvision_network(name: str) -> Callable[..., nn.Module]:
    """A builder ``(num_classes=1000)`` of torchvision's network ``name``, randomly initialised."""
    def build(num_classes: int = 1000) -> nn.Module:
        return getattr(models, name)(weights=None, num_classes=num_classes)

    return build


class WideResNet18(ResNet):
    """ResNet18 whose stage widths (64, 128, 256, 512) are multiplied by ``widen`` while the 64-channel
    stem stays; torchvision's blocks, initialisation and parameter names (widen 1.5: 25.88M, widen
    2.0: 45.62M parameters; paper Table 4)."""

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
        for m in self.modules():  # torchvision's initialisation for the rebuilt convolutions
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
