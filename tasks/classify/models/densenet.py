"""DenseNet-BC for CIFAR (Huang et al., 2017): torchvision's ``DenseNet`` with the CIFAR stem, a single
3x3 convolution to 2k channels and no BN, ReLU or pooling after it (module names stay torchvision's).
"""
from __future__ import annotations

from torch import nn
from torchvision.models.densenet import DenseNet


def cifar_densenet_bc(depth: int = 100, growth_rate: int = 12, num_classes: int = 100, drop_rate: float = 0.0) -> DenseNet:
    """DenseNet-BC-depth (k = growth_rate) for 32x32 inputs."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"DenseNet-BC depth must be 6n+4 (e.g. 100, 190), got {depth}")
    layers = (depth - 4) // 6
    model = DenseNet(growth_rate=growth_rate, block_config=(layers, layers, layers),
                     num_init_features=2 * growth_rate, bn_size=4, drop_rate=drop_rate, num_classes=num_classes)
    stem = nn.Conv2d(3, 2 * growth_rate, kernel_size=3, padding=1, bias=False)
    nn.init.kaiming_normal_(stem.weight)  # same initialisation torchvision gives its convolutions
    model.features.conv0 = stem
    # The CIFAR stem has no BN-ReLU-pool: the first dense layer starts with its own BN-ReLU.
    for name in ("norm0", "relu0", "pool0"):
        delattr(model.features, name)
    return model


def densenet100_bc(num_classes: int = 100) -> DenseNet:
    """DenseNet-BC-100 with growth rate 12: 0.80M parameters with 100 classes (paper Table 3)."""
    return cifar_densenet_bc(100, 12, num_classes=num_classes)
