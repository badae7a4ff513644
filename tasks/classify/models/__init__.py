"""Classification networks of the BAM paper, registered in ``tasks.networks`` on import.

CIFAR-100 (Tables 2, 3, 10): ``resnet50`` / ``resnet101`` (CIFAR stem), ``preresnet110``,
``wrn28_8``, ``wrn28_10``, ``wrn40_10``, ``resnext29_8x64d``, ``resnext29_16x64d``,
``densenet100_bc``, and ``resnet20`` (not in the paper: a small network for CPU demos). ImageNet (Table 4): ``resnet18``, ``resnet50``, ``resnet101``, ``wrn18_1.5``,
``wrn18_2.0``, ``resnext50_32x4d``, ``mobilenet_v2``, ``squeezenet1_1``.
Importing this package declares the CIFAR-100 data set (bam's registry knows ImageNet only) and
registers every network above; build them with ``tasks.networks.build_network(name, dataset=...)``.
"""
from __future__ import annotations

from functools import partial

from tasks.networks import register_dataset, register_network

from . import imagenet
from .cifar_resnet import CifarResNet, SmallCifarResNet, cifar_resnet50, cifar_resnet101, resnet20
from .densenet import cifar_densenet_bc, densenet100_bc
from .imagenet import WideResNet18, wide_resnet18
from .preresnet import PreResNet, preresnet110
from .resnext import CifarResNeXt, resnext29_8x64d, resnext29_16x64d
from .wide_resnet import WideResNet, wrn28_8, wrn28_10, wrn40_10

__all__ = ["CifarResNet", "CifarResNeXt", "SmallCifarResNet", "resnet20", "PreResNet", "WideResNet", "WideResNet18", "cifar_densenet_bc",
           "cifar_resnet50", "cifar_resnet101", "densenet100_bc", "preresnet110", "resnext29_8x64d",
           "resnext29_16x64d", "wide_resnet18", "wrn28_8", "wrn28_10", "wrn40_10"]

# 32x32 crops (placement is traced and MACs are counted at that size), 100 classes.
register_dataset("cifar100", (3, 32, 32), num_classes=100)
_CIFAR = ("cifar100",)
_IMAGENET = ("imagenet",)

# ResNet-20 is no network of the paper: the small CIFAR network of CPU demos and quick checks.
register_network("resnet20", _CIFAR)(resnet20)
register_network("resnet50", _CIFAR, resnet_blocks="bottleneck")(cifar_resnet50)
register_network("resnet101", _CIFAR, resnet_blocks="bottleneck")(cifar_resnet101)
register_network("preresnet110", _CIFAR, resnet_blocks="bottleneck")(preresnet110)
register_network("wrn28_8", _CIFAR, resnet_blocks="basic")(wrn28_8)
register_network("wrn28_10", _CIFAR, resnet_blocks="basic")(wrn28_10)
register_network("wrn40_10", _CIFAR, resnet_blocks="basic")(wrn40_10)
register_network("resnext29_8x64d", _CIFAR, resnet_blocks="bottleneck")(resnext29_8x64d)
register_network("resnext29_16x64d", _CIFAR, resnet_blocks="bottleneck")(resnext29_16x64d)
register_network("densenet100_bc", _CIFAR)(densenet100_bc)

register_network("resnet18", _IMAGENET, resnet_blocks="basic")(imagenet.resnet18)
register_network("resnet50", _IMAGENET, resnet_blocks="bottleneck")(imagenet.resnet50)
register_network("resnet101", _IMAGENET, resnet_blocks="bottleneck")(imagenet.resnet101)
register_network("resnext50_32x4d", _IMAGENET, resnet_blocks="bottleneck")(imagenet.resnext50_32x4d)
register_network("wrn18_1.5", _IMAGENET, resnet_blocks="basic")(partial(wide_resnet18, 1.5))
register_network("wrn18_2.0", _IMAGENET, resnet_blocks="basic")(partial(wide_resnet18, 2.0))
register_network("mobilenet_v2", _IMAGENET)(imagenet.mobilenet_v2)
register_network("squeezenet1_1", _IMAGENET)(imagenet.squeezenet1_1)
