"""Faster R-CNN with a ResNet101 (+ BAM) backbone, assembled from torchvision's detection parts.

* ``fpn=False`` (default, the paper's detector): the original Faster R-CNN for ResNets ("C4"):
  ``conv1 .. layer3`` make one stride-16 map shared by the RPN and RoI pooling, and ``layer4`` runs
  on every 14x14 RoI as the box head. The paper's numbers (29.1 / 30.4 mAP) are in its range.
* ``fpn=True``: torchvision's ``fasterrcnn_resnet50_fpn`` recipe on a ResNet101, a stronger baseline.

BAM sits after ``layer1..3`` (``bam.attach_attention`` on the ResNet101, as for ImageNet, so a
classification checkpoint's BAM weights load as they are) and is registered as
``detector.attention``. Backbone BatchNorms are frozen when the backbone starts from ImageNet
weights; BAM's own stay trainable, so training needs at least 2 images per process.
"""

from __future__ import annotations

import os
from collections import OrderedDict

from torch import nn
from torchvision.models import resnet101
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.misc import FrozenBatchNorm2d

from bam import attach_attention
from tasks.common.model_io import model_builder
from tasks.networks import load_imagenet_weights, register_dataset, register_network

ATTENTIONS = ("none", "bam")
# Torchvision's freezing order: the first `5 - trainable_layers` of these stay fixed.
_STAGES = ("layer4", "layer3", "layer2", "layer1", "conv1")
BAM_TARGETS = ["layer1", "layer2", "layer3"]


def _freeze(resnet: nn.Module, trainable_layers: int) -> None:
    """Freeze the trunk stages torchvision freezes; attention modules always train."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
    train = list(_STAGES[:trainable_layers]) + (["bn1"] if trainable_layers == 5 else [])
    for name, parameter in resnet.named_parameters():
        keep = name.startswith("attention.") or any(name.startswith(stage) for stage in train)
        parameter.requires_grad_(keep)


def build_resnet101_trunk(attention: str = "none", backbone_weights: str | os.PathLike | None = None,
                          frozen_bn: bool | None = None) -> nn.Module:
    """A torchvision ResNet101 (never downloaded), BAM attached after layer1..3, weights loaded."""
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    if frozen_bn is None:  # torchvision: frozen statistics only when they come from pre-training
        frozen_bn = backbone_weights is not None
    norm_layer = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    resnet = resnet101(weights=None, norm_layer=norm_layer)
    # Placement is traced at 128 px: the same stage ends as at 224, at a third of the cost.
    targets = attach_attention(resnet, attention, input_size=(3, 128, 128))  # [] for "none"
    if targets and sorted(targets) != BAM_TARGETS:  # the detector relies on exactly this placement
        raise RuntimeError(f"BAM was placed after {targets}, expected {BAM_TARGETS}")
    if backbone_weights is not None:
        load_imagenet_weights(resnet, backbone_weights, "resnet101")
    return resnet


@model_builder
def fasterrcnn_resnet101(
    num_classes: int = 91,
    attention: str = "none",
    backbone_weights: str | os.PathLike | None = None,
    fpn: bool = False,
    trainable_layers: int = 3,
    min_size: int = 800,
    max_size: int = 1333,
    frozen_bn: bool | None = None,
    **kwargs,
) -> FasterRCNN:
    """Faster R-CNN, ResNet101 backbone, optional BAM after layer1..3.

    ``num_classes`` counts the background (COCO's category ids go up to 90, hence 91).
    ``backbone_weights``: a local ImageNet checkpoint of the ResNet101 (see
    :func:`tasks.networks.load_imagenet_weights`); ``None`` trains from scratch, as torchvision does
    then with ordinary BatchNorm and every layer trainable. ``trainable_layers`` counts trunk stages from
    ``layer4``; ``frozen_bn`` defaults to ``backbone_weights is not None``; ``kwargs`` go to
    torchvision's ``FasterRCNN``.
    """
    if backbone_weights is None:  # torchvision: from scratch, everything trains
        trainable_layers = 5
    resnet = build_resnet101_trunk(attention, backbone_weights, frozen_bn)
    _freeze(resnet, trainable_layers)
    if fpn:
        backbone = BackboneWithFPN(resnet, {f"layer{i}": str(i - 1) for i in range(1, 5)},
                                   [256, 512, 1024, 2048], 256)
        detector = FasterRCNN(backbone, num_classes, min_size=min_size, max_size=max_size, **kwargs)
    else:
        backbone = IntermediateLayerGetter(resnet, return_layers={"layer3": "0"})
        backbone.out_channels = resnet.layer3[-1].conv3.out_channels  # 1024
        head = nn.Sequential(OrderedDict(layer4=resnet.layer4, pool=nn.AdaptiveAvgPool2d(1),
                                         flatten=nn.Flatten()))
        # Detectron's C4 settings: 15 anchors per position on one stride-16 map, 14x14 RoIAlign
        # followed by the stride-2 layer4, and the larger pre-NMS proposal counts of one level.
        kwargs.setdefault("rpn_pre_nms_top_n_train", 12000)
        kwargs.setdefault("rpn_pre_nms_top_n_test", 6000)
        anchors = AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
        detector = FasterRCNN(
            backbone,
            min_size=min_size,
            max_size=max_size,
            rpn_anchor_generator=anchors,
            box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=14, sampling_ratio=0),
            box_head=head,
            box_predictor=FastRCNNPredictor(resnet.layer4[-1].conv3.out_channels, num_classes),
            **kwargs,
        )
    # IntermediateLayerGetter keeps only the trunk's children, not the ModuleDict that BAM lives
    # in (its hooks on layer1..3 still fire). Registering it on the detector, where
    # bam.attach_attention would put it (``model.attention``), trains, saves and moves it with the
    # rest, and lets bam.capture_attention find it. The baseline gets an empty one.
    detector.attention = getattr(resnet, "attention", nn.ModuleDict())
    return detector


# `python -m tasks.profile fasterrcnn-resnet101 --dataset coco`; COCO inputs are resized to a short
# side of 800 (long side at most 1333).
register_dataset("coco", (3, 800, 1333), num_classes=91)
register_network("fasterrcnn-resnet101", datasets=("coco",), places_attention=True)(fasterrcnn_resnet101)
