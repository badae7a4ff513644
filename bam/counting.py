"""Parameters and MACs in the paper's convention.

The paper's "GFLOPs" are multiply-accumulates of convolutions and linear layers only (no BN,
activation or pooling), counted on ResNet v1 (stride on a bottleneck's first 1x1 conv).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .placement import dummy_forward

# The aten ops that carry the conv and linear (fully connected) work; FlopCounterMode counts
# 2 FLOPs per multiply-accumulate for each of them.
_aten = torch.ops.aten
_CONV_AND_LINEAR_OPS = {_aten.convolution, _aten._convolution, _aten.mm, _aten.addmm, _aten.bmm,
                        _aten.baddbmm}


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or frozen); buffers such as BN statistics excluded."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> int:
    """Conv + linear multiply-accumulates of one forward pass on a single ``input_size`` image."""
    counter = FlopCounterMode(display=False)
    with counter:
        dummy_forward(model, input_size)
    per_op = counter.get_flop_counts().get("Global", {})
    return int(sum(flops for op, flops in per_op.items() if op in _CONV_AND_LINEAR_OPS)) // 2


def to_resnet_v1(model: nn.Module) -> nn.Module:
    """Move each bottleneck's stride from its 3x3 conv2 to its 1x1 conv1, in place.

    torchvision's ResNet (v1.5) strides the 3x3 conv; the original ResNet (v1), on which the
    paper counts FLOPs, strides the first 1x1 conv. The projection shortcut keeps its stride, the
    parameters are unchanged; only the MACs (and the trained function) differ.
    """
    for module in model.modules():
        convs = [getattr(module, f"conv{i}", None) for i in (1, 2, 3)]
        # only bottleneck blocks (1x1, 3x3, 1x1) have a stride to move
        if (all(isinstance(conv, nn.Conv2d) for conv in convs) and convs[0].kernel_size == (1, 1)
                and convs[1].stride != (1, 1)):
            convs[0].stride, convs[1].stride = convs[1].stride, (1, 1)
    return model
