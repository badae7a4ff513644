"""Classification networks of the BAM paper, registered in ``tasks.networks`` on import (with the
CIFAR-100 data set, which the registry does not know by itself); build them with
``tasks.networks.build_network(name, dataset=...)``. ``resnet20`` on CIFAR is no network of the
paper: the small network of CPU demos and quick checks."""
from __future__ import annotations

from functools import partial

from tasks.networks import register_dataset, register_network

from .cifar_resnet import CifarResNet, SmallCifarResNet, cifar_resnet50, cifar_resnet101, resnet20
from .densenet import cifar_densenet_bc, densenet100_bc
from .imagenet import WideResNet18, torchvision_network
from .preresnet import PreResNet, preresnet110
from .resnext import CifarResNeXt, resnext29_8x64d, resnext29_16x64d
from .wide_resnet import WideResNet, wrn28_8, wrn28_10, wrn40_10

__all__ = ["CifarResNet", "CifarResNeXt", "SmallCifarResNet", "resnet20", "PreResNet", "WideResNet", "WideResNet18",
           "cifar_densenet_bc", "cifar_resnet50", "cifar_resnet101", "densenet100_bc", "preresnet110",
           "resnext29_8x64d", "resnext29_16x64d", "wrn28_8", "wrn28_10", "wrn40_10"]

# 32x32 crops (placement is traced and MACs are counted at that size), 100 classes.
register_dataset("cifar100", (3, 32, 32), num_classes=100)

for name, builder, blocks in (
    ("resnet20", resnet20, None), ("resnet50", cifar_resnet50, "bottleneck"),
    ("resnet101", cifar_resnet101, "bottleneck"), ("preresnet110", preresnet110, "bottleneck"),
    ("wrn28_8", wrn28_8, "basic"), ("wrn28_10", wrn28_10, "basic"), ("wrn40_10", wrn40_10, "basic"),
    ("resnext29_8x64d", resnext29_8x64d, "bottleneck"), ("resnext29_16x64d", resnext29_16x64d, "bottleneck"),
    ("densenet100_bc", densenet100_bc, None),
):
    register_network(name, ("cifar100",), resnet_blocks=blocks)(builder)

for name, builder, blocks in (
    ("resnet18", torchvision_network("resnet18"), "basic"),
    ("resnet50", torchvision_network("resnet50"), "bottleneck"),
    ("resnet101", torchvision_network("resnet101"), "bottleneck"),
    ("resnext50_32x4d", torchvision_network("resnext50_32x4d"), "bottleneck"),
    ("wrn18_1.5", partial(WideResNet18, 1.5), "basic"), ("wrn18_2.0", partial(WideResNet18, 2.0), "basic"),
    ("mobilenet_v2", torchvision_network("mobilenet_v2"), None),
    ("squeezenet1_1", torchvision_network("squeezenet1_1"), None),
):
    register_network(name, ("imagenet",), resnet_blocks=blocks)(builder)
