"""UperNet with a torchvision ResNet encoder (optionally with BAM), as in CSAILVision's
semantic-segmentation-pytorch.

Encoder: a torchvision ResNet (no download) with attention placed by one call to
:func:`bam.attach_attention`, which keeps torchvision's parameter names, so ImageNet checkpoints of
torchvision or of this repository's classifiers load into ``UperNet.encoder`` with
:func:`tasks.networks.load_imagenet_weights`.
Decoder: PPM on the last stage (pool scales 1, 2, 3, 6), FPN on stages 1-3, all four levels fused
at 1/4, a 1x1 classifier; the logits are upsampled to the input size (full-resolution loss).
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from bam import attach_attention, count_macs
from tasks.common.model_io import model_builder
from tasks.networks import register_dataset, register_network

STAGES = ("layer1", "layer2", "layer3", "layer4")
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
POOL_SCALES = (1, 2, 3, 6)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class PyramidPooling(nn.Module):
    """PPM head of PSPNet/UperNet on the last encoder stage."""

    def __init__(self, in_channels: int, channels: int = 512):
        super().__init__()
        self.pool_scales = POOL_SCALES
        self.branches = nn.ModuleList(conv_bn_relu(in_channels, channels, 1) for _ in self.pool_scales)
        self.bottleneck = conv_bn_relu(in_channels + len(self.pool_scales) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        outputs = [x]
        for scale, branch in zip(self.pool_scales, self.branches):
            pooled = F.adaptive_avg_pool2d(x, scale)
            # Upsample before the conv + BN, as CSAIL does: BN then sees HxW values per image, so a
            # 1x1 pooled map with a batch of one does not break BN's training statistics.
            outputs.append(branch(F.interpolate(pooled, size=size, mode="bilinear", align_corners=False)))
        return self.bottleneck(torch.cat(outputs, dim=1))


class UperNetHead(nn.Module):
    """PPM + FPN + fusion at the finest level + classifier (CSAIL's ``UPerNet`` decoder)."""

    def __init__(self, in_channels: Sequence[int] = (256, 512, 1024, 2048), num_classes: int = 150,
                 channels: int = 512):
        super().__init__()
        self.ppm = PyramidPooling(in_channels[-1], channels)
        self.lateral = nn.ModuleList(conv_bn_relu(c, channels, 1) for c in in_channels[:-1])
        self.fpn_out = nn.ModuleList(conv_bn_relu(channels, channels, 3) for _ in in_channels[:-1])
        self.fuse = conv_bn_relu(len(in_channels) * channels, channels, 3)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module is not self.classifier:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        top = self.ppm(features[-1])
        levels = [top]
        for i in reversed(range(len(features) - 1)):
            lateral = self.lateral[i](features[i])
            top = lateral + F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            levels.insert(0, self.fpn_out[i](top))
        size = levels[0].shape[-2:]
        fused = [levels[0]] + [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in levels[1:]]
        return self.classifier(self.fuse(torch.cat(fused, dim=1)))


class UperNet(nn.Module):
    """UperNet scene parser. ``forward(images)`` returns logits at the input resolution."""

    def __init__(self, num_classes: int = 150, backbone: str = "resnet50", attention: str = "none",
                 placement: str = "bottleneck", channels: int = 512):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        self.backbone = backbone
        encoder = getattr(torchvision.models, backbone)(weights=None)
        # None / "none" attaches nothing and returns [].
        self.attention_targets: list[str] = attach_attention(encoder, attention, placement=placement,
                                                             input_size=(3, 224, 224))
        # The classifier head of the ImageNet net is unused; dropping it avoids unused parameters
        # (which DDP rejects) while keeping every other parameter name torchvision's.
        encoder.avgpool, encoder.fc = nn.Identity(), nn.Identity()
        self.encoder = encoder
        expansion = 4 if backbone in ("resnet50", "resnet101", "resnet152") else 1
        self.decoder = UperNetHead([c * expansion for c in (64, 128, 256, 512)], num_classes, channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # The four stage outputs (strides 4, 8, 16, 32); calling the stage modules runs the forward
        # hooks that bam.attach_attention put on them.
        resnet, x = self.encoder, images
        x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
        features = []
        for name in STAGES:
            x = getattr(resnet, name)(x)
            features.append(x)
        logits = self.decoder(features)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def profile_parts(self, input_size: tuple[int, int, int] = (3, 512, 512)) -> dict[str, dict[str, int]]:
        """``{"encoder"|"decoder"|"total": {"params", "macs"}}``: the split ``tasks.profile`` reports."""
        params, macs = parameter_breakdown(self), mac_breakdown(self, input_size)
        return {part: {"params": params[part], "macs": macs[part]} for part in ("encoder", "decoder", "total")}


def parameter_breakdown(model: UperNet) -> dict[str, int]:
    """Parameters of the whole model, the encoder (its attention included), the attention alone,
    and the decoder. The attention lives in ``model.encoder.attention`` (:class:`UperNet`) or in
    ``model.attention`` (``tasks.networks.build_network`` attaches it to the whole model)."""
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    outer = getattr(model, "attention", None)
    outer = count(outer) if isinstance(outer, nn.Module) else 0
    inner = getattr(model.encoder, "attention", None)
    inner = count(inner) if isinstance(inner, nn.Module) else 0
    return OrderedDict(total=count(model), encoder=count(model.encoder) + outer, attention=inner + outer,
                       decoder=count(model.decoder))


def mac_breakdown(model: UperNet, input_size: tuple[int, int, int] = (3, 512, 512)) -> dict[str, int]:
    """Conv/linear multiply-accumulates of the whole model and the encoder (``bam.count_macs``);
    decoder = total - encoder (the final upsampling has no MACs)."""
    total = count_macs(model, input_size)
    # The encoder's own forward: its avgpool and fc are identities, and the hooks on the stages
    # run the attention.
    encoder = count_macs(model.encoder, input_size)
    return OrderedDict(total=total, encoder=encoder, decoder=total - encoder)


# ``python -m tasks.profile upernet-resnet50 --dataset ade20k``; 512x512 is the usual ADE20K crop. No
# resnet_blocks: the encoder is torchvision's v1.5 as trained here (the paper gives no UperNet counts).
register_dataset("ade20k", (3, 512, 512), 150)
for _backbone in BACKBONES:
    register_network(f"upernet-{_backbone}", datasets=("ade20k",))(partial(UperNet, backbone=_backbone))

upernet = model_builder(UperNet)  # the builder a scene-parsing run's network.json names
