"""Parameters and MACs in the paper's convention.

The paper's "GFLOPs" are multiply-accumulates of convolutions and linear layers only (no BN,
activation or pooling), counted on ResNet v1 (stride on a bottleneck's first 1x1 conv).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# The aten ops that carry the conv and linear (fully connected) work; FlopCounterMode counts
# 2 FLOPs per multiply-accumulate for each of them.
_CONV_AND_LINEAR_OPS = {"convolution", "_convolution", "mm", "addmm", "bmm", "baddbmm"}


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or frozen); buffers such as BN statistics excluded."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> int:
    """Conv + linear multiply-accumulates of one forward pass on a single ``input_size`` image."""
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (channels, height, width), got {input_size!r}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    modes = {module: module.training for module in model.modules()}
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(torch.zeros(1, *map(int, input_size), device=device, dtype=dtype))
    finally:
        for module, mode in modes.items():
            module.training = mode
    per_op = counter.get_flop_counts().get("Global", {})
    flops = sum(count for op, count in per_op.items() if _op_name(op) in _CONV_AND_LINEAR_OPS)
    return int(flops) // 2


def _op_name(op) -> str:
    # "aten.convolution" (or "aten.convolution.default") -> "convolution"
    parts = str(op).split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def to_resnet_v1(model: nn.Module) -> nn.Module:
    """Move each bottleneck's stride from its 3x3 conv2 to its 1x1 conv1, in place.

    torchvision's ResNet (v1.5) strides the 3x3 conv; the original ResNet (v1), on which the
    paper counts FLOPs, strides the first 1x1 conv. The projection shortcut keeps its stride, the
    parameters are unchanged; only the MACs (and the trained function) differ.
    """
    for module in model.modules():
        conv1, conv2 = getattr(module, "conv1", None), getattr(module, "conv2", None)
        if not (isinstance(conv1, nn.Conv2d) and isinstance(conv2, nn.Conv2d)
                and isinstance(getattr(module, "conv3", None), nn.Conv2d)):
            continue  # only bottleneck blocks (1x1, 3x3, 1x1) have a stride to move
        if conv1.kernel_size != (1, 1) or conv2.stride == (1, 1):
            continue
        conv1.stride, conv2.stride = conv2.stride, (1, 1)
    return model
