"""Parameter and MAC counts against textbook formulas and the paper's Tables 3-4."""

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from bam import attach_attention, count_macs, count_params, to_resnet_v1


def meta(builder, **kwargs):
    with torch.device("meta"):  # shapes only: FlopCounterMode counts meta tensors too
        return builder(**kwargs)


def conv_macs(cout, cin, k, hout, wout, groups=1):
    return cout * (cin // groups) * k * k * hout * wout


def bam_params(c, r=16):
    """Eqs. (3)-(4) with biases and final BNs, hidden width max(C // r, 1)."""
    h = max(c // r, 1)
    channel = (c * h + h) + 2 * h + (h * c + c) + 2 * c
    spatial = (c * h + h) + 2 * h + 2 * (9 * h * h + 3 * h) + (h + 1) + 2
    return channel + spatial


# ------------------------------------------------------------------------------ textbook MACs
def test_single_conv_and_linear_against_formula():
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    # H_out = floor((17 + 2 - 3) / 2) + 1 = 9, W_out = floor((13 + 2 - 3) / 2) + 1 = 7
    assert count_macs(conv, (3, 17, 13)) == conv_macs(8, 3, 3, 9, 7)
    grouped = nn.Conv2d(8, 16, 3, groups=4, dilation=2)
    assert count_macs(grouped, (8, 10, 12)) == conv_macs(16, 8, 3, 6, 8, groups=4)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 4, 5))
    assert count_macs(linear, (2, 3, 4)) == 24 * 5


def test_only_conv_and_linear_are_counted():
    conv = nn.Conv2d(4, 6, 1)
    net = nn.Sequential(conv, nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    assert count_macs(net, (4, 8, 8)) == conv_macs(6, 4, 1, 8, 8) + 6 * 3


def test_count_macs_restores_mode_and_checks_input_size():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    count_macs(net, (3, 8, 8))
    assert net.training and net[1].training
    with pytest.raises(ValueError, match="input_size"):
        count_macs(net, (8, 8))


def test_count_params_counts_frozen_parameters_not_buffers():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    net[0].weight.requires_grad_(False)
    assert count_params(net) == 3 * 4 * 9 + 4 + 2 * 4


# --------------------------------------------------------------------------- paper's Table 4
@pytest.mark.parametrize("builder,base,with_bam,channels", [
    (tvm.resnet18, 11.69, 11.71, (64, 128, 256)),
    (tvm.resnet50, 25.56, 25.92, (256, 512, 1024)),
    (tvm.resnet101, 44.55, 44.91, (256, 512, 1024)),
])
def test_imagenet_resnet_parameters(builder, base, with_bam, channels):
    model = meta(builder)
    before = count_params(model)
    attach_attention(model, "bam")
    after = count_params(model)
    assert round(before / 1e6, 2) == base and round(after / 1e6, 2) == with_bam
    assert after - before == sum(bam_params(c) for c in channels)


def test_resnet50_exact_base_count():
    assert count_params(meta(tvm.resnet50)) == 25_557_032


def test_resnet50_macs_in_both_layouts():
    model = meta(tvm.resnet50)
    assert round(count_macs(model) / 1e9, 2) == 4.09  # torchvision (v1.5): stride on the 3x3
    to_resnet_v1(model)
    assert round(count_macs(model) / 1e9, 2) == 3.86  # the paper's count (v1)
    attach_attention(model, "bam")
    assert round(count_macs(model) / 1e9, 2) == 3.94  # Table 4: 3.86 -> 3.94


def test_cifar_resnet50_macs():
    from tasks.networks import build_network  # the registry with the repository's networks in it

    with torch.device("meta"):
        base = to_resnet_v1(build_network("resnet50", "cifar100"))
        with_bam = to_resnet_v1(build_network("resnet50", "cifar100", attention="bam"))
    assert round(count_macs(base, (3, 32, 32)) / 1e9, 2) == 1.22  # Table 2: 1.22 -> 1.25
    assert round(count_macs(with_bam, (3, 32, 32)) / 1e9, 2) == 1.25


# ------------------------------------------------------------------------------- to_resnet_v1
def test_to_resnet_v1_moves_only_bottleneck_strides():
    model = meta(tvm.resnet50)
    params = count_params(model)
    assert to_resnet_v1(model) is model
    block = model.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert block.downsample[0].stride == (2, 2)
    assert model.layer2[1].conv1.stride == (1, 1) and model.layer1[0].conv1.stride == (1, 1)
    assert count_params(model) == params
    macs = count_macs(model)
    assert count_macs(to_resnet_v1(model)) == macs  # idempotent
    # v1 runs each downsampling block's first 1x1 conv (cin -> mid) at the output size instead of
    # the input size S x S: it saves cin * mid * (S^2 - (S/2)^2) MACs in layer2.0, 3.0 and 4.0.
    saved = sum(cin * mid * (s * s - (s // 2) ** 2)
                for cin, mid, s in [(256, 128, 56), (512, 256, 28), (1024, 512, 14)])
    assert count_macs(meta(tvm.resnet50)) - macs == saved


def test_basic_block_resnet_is_unchanged():
    model = meta(tvm.resnet18)
    macs = count_macs(model)
    to_resnet_v1(model)
    assert model.layer2[0].conv1.stride == (2, 2) and count_macs(model) == macs


@pytest.mark.parametrize("attention", ["se", "cbam"])
def test_se_and_cbam_resnet50_sizes(attention):
    # One module per bottleneck block: 28.09M for both (Woo et al. 2018, ImageNet table).
    model = meta(tvm.resnet50)
    attach_attention(model, attention, placement="block")
    assert round(count_params(model) / 1e6, 2) == 28.09
