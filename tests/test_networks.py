"""Networks of the paper's classification tables, against the paper's printed parameter counts.

Counting runs on the meta device (shapes only), so even the 68M-parameter nets cost nothing.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision

from bam import count_params
from tasks.networks import (build_network, get_network_entry, input_size_for, list_networks,
                               network_datasets, register_network)
from tasks.classify.models import CifarResNeXt, PreResNet, WideResNet, cifar_densenet_bc

# The paper's figures as printed (Table 3: CIFAR-100, Table 4: ImageNet): base -> +BAM.
PAPER_PARAMS = {
    ("cifar100", "resnet50"): ("23.71", "24.07"),
    ("cifar100", "resnet101"): ("42.70", "43.06"),
    ("cifar100", "preresnet110"): ("1.726", "1.733"),
    ("cifar100", "wrn28_8"): ("23.40", "23.42"),
    ("cifar100", "wrn28_10"): ("36.54", "36.57"),
    ("cifar100", "wrn40_10"): ("55.90", "55.94"),
    ("cifar100", "resnext29_8x64d"): ("34.52", "34.61"),
    ("cifar100", "resnext29_16x64d"): ("68.25", "68.34"),
    ("cifar100", "densenet100_bc"): ("0.8", "0.84"),
    ("imagenet", "resnet18"): ("11.69", "11.71"),
    ("imagenet", "resnet50"): ("25.56", "25.92"),
    ("imagenet", "resnet101"): ("44.55", "44.91"),
    ("imagenet", "wrn18_1.5"): ("25.88", "25.93"),
    ("imagenet", "wrn18_2.0"): ("45.62", "45.71"),
    ("imagenet", "resnext50_32x4d"): ("25.03", "25.39"),
    ("imagenet", "mobilenet_v2"): ("3.505", "3.516"),
    ("imagenet", "squeezenet1_1"): ("1.24", "1.26"),
}
# Rows a BAM placed before each downsampling cannot reach (see docs/model-zoo.md): our exact counts.
UNREACHABLE_WITH_BAM = {
    ("cifar100", "preresnet110"): 1_732_406,     # paper 1.733M
    ("cifar100", "wrn40_10"): 55_934_280,        # paper 55.94M
    ("cifar100", "resnext29_16x64d"): 68_334_874,  # paper 68.34M
    ("imagenet", "mobilenet_v2"): 3_508_314,     # paper 3.516M; placement not described by the paper
}
NAMES = ["resnet18", "resnet50", "resnet101", "preresnet110", "wrn28_8", "wrn28_10", "wrn40_10", "resnext29_8x64d",
         "resnext29_16x64d", "densenet100_bc", "wrn18_1.5", "wrn18_2.0", "resnext50_32x4d", "mobilenet_v2",
         "squeezenet1_1"]


def rounded(count: int, printed: str) -> str:
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return f"{count / 1e6:.{decimals}f}"


def meta_network(arch: str, dataset: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return build_network(arch, dataset, **kwargs)


def bam_params(channels: int, r: int = 16) -> int:
    """BAM's parameters written out from the paper's equations (2)-(4), biases included."""
    h = channels // r
    channel = (channels * h + h) + 2 * h + (h * channels + channels) + 2 * channels  # MLP + BN, final BN
    spatial = (channels * h + h) + 2 * h + 2 * (9 * h * h + h + 2 * h) + (h + 1) + 2  # 1x1, 2 dilated 3x3, 1x1, BN
    return channel + spatial


def test_names_and_datasets():
    # Other tasks register their own networks (UperNet on ade20k, ...) in the same registry.
    assert set(list_networks("cifar100")) | set(list_networks("imagenet")) == set(NAMES) | {"resnet20"}
    assert set(NAMES) <= set(list_networks())
    assert network_datasets("resnet50") == ["imagenet", "cifar100"]
    assert network_datasets("wrn28_10") == ["cifar100"]
    assert input_size_for("cifar100") == (3, 32, 32)
    assert input_size_for("imagenet") == (3, 224, 224)


@pytest.mark.parametrize("dataset,arch", sorted(PAPER_PARAMS))
def test_base_params_match_paper(dataset, arch):
    printed = PAPER_PARAMS[(dataset, arch)][0]
    assert rounded(count_params(meta_network(arch, dataset)), printed) == printed


# Where the one generic placement call puts BAM: right before each downsampling between stages.
EXPECTED_SITES = {
    ("imagenet", "resnet50"): ["layer1", "layer2", "layer3"],
    ("cifar100", "resnet50"): ["layer1", "layer2", "layer3"],
    ("cifar100", "preresnet110"): ["layer1", "layer2"],
    ("cifar100", "wrn28_8"): ["layer1", "layer2"],
    ("cifar100", "resnext29_8x64d"): ["layer1", "layer2"],
    ("cifar100", "densenet100_bc"): ["features.denseblock1", "features.denseblock2"],
    ("imagenet", "squeezenet1_1"): ["features.4", "features.7"],
}
# The traced widths: the stage widths of each family.
EXPECTED_WIDTHS = {
    ("cifar100", "preresnet110"): [64, 128],
    ("cifar100", "wrn28_10"): [160, 320],
    ("cifar100", "densenet100_bc"): [216, 300],
    ("imagenet", "wrn18_1.5"): [96, 192, 384],
    ("imagenet", "resnet50"): [256, 512, 1024],
}


@pytest.mark.parametrize("dataset,arch", sorted(PAPER_PARAMS))
def test_bam_params(dataset, arch):
    model = meta_network(arch, dataset, attention="bam")
    params = count_params(model)
    modules = list(model.attention.values())
    # The overhead is exactly the modules the equations define, at the traced widths.
    assert count_params(model.attention) == sum(bam_params(module.channels) for module in modules)
    if (dataset, arch) in EXPECTED_SITES:
        assert list(model.attention.keys()) == [s.replace(".", "_") for s in EXPECTED_SITES[(dataset, arch)]]
    if (dataset, arch) in EXPECTED_WIDTHS:
        assert [module.channels for module in modules] == EXPECTED_WIDTHS[(dataset, arch)]
    printed = PAPER_PARAMS[(dataset, arch)][1]
    if (dataset, arch) in UNREACHABLE_WITH_BAM:
        assert params == UNREACHABLE_WITH_BAM[(dataset, arch)]
        assert rounded(params, printed) != printed
    else:
        assert rounded(params, printed) == printed


def test_exact_counts_against_torchvision():
    # ImageNet nets are torchvision's; the CIFAR ResNet50 only swaps the 7x7 stem for a 3x3 one.
    with torch.device("meta"):
        reference = torchvision.models.resnet50(num_classes=100)
    expected = count_params(reference) - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64
    assert count_params(meta_network("resnet50", "cifar100")) == expected == 23_705_252
    assert count_params(meta_network("resnet50", "imagenet")) == 25_557_032
    # WideResNet18 (widen 2): every stage of ResNet18 twice as wide; the 64-channel stem unchanged.
    wide = meta_network("wrn18_2.0", "imagenet")
    assert wide.conv1.out_channels == 64
    assert [layer[0].conv1.out_channels for layer in (wide.layer1, wide.layer2, wide.layer3, wide.layer4)] == \
        [128, 256, 512, 1024]
    # WRN-28-10 by the textbook count: 3x3 convs, 1x1 projections, BNs and the classifier.
    convs = 3 * 16 * 9 + sum(9 * (cin * cout + (n - 1) * cout * cout) + 9 * n * cout * cout + cin * cout
                             for cin, cout, n in ((16, 160, 4), (160, 320, 4), (320, 640, 4)))
    bns = 2 * sum(cin + cout + (n - 1) * 2 * cout for cin, cout, n in ((16, 160, 4), (160, 320, 4), (320, 640, 4)))
    assert count_params(meta_network("wrn28_10", "cifar100")) == convs + bns + 2 * 640 + 640 * 100 + 100


def test_preresnet110_is_the_bottleneck_variant():
    model = meta_network("preresnet110", "cifar100")
    assert [len(layer) for layer in (model.layer1, model.layer2, model.layer3)] == [18, 18, 18]
    assert model.fc.in_features == 256  # 64 * bottleneck expansion 4


def test_small_cifar_networks_forward():
    # Real forward passes on tiny members of each family, and shape checks of the full nets on meta.
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for model in (PreResNet(20, num_classes=7), PreResNet(44, num_classes=7),
                  WideResNet(10, 1, num_classes=7, dropout=0.3), CifarResNeXt(11, 2, 4, num_classes=7),
                  cifar_densenet_bc(16, 4, num_classes=7)):
        out = model.train()(x)
        assert out.shape == (2, 7) and torch.isfinite(out).all()
    for arch in ("wrn40_10", "resnext29_16x64d", "resnet50"):  # full-size nets: shapes only
        assert meta_network(arch, "cifar100")(torch.empty(2, 3, 32, 32, device="meta")).shape == (2, 100)


def test_real_forward_with_bam():
    torch.manual_seed(0)
    model = build_network("preresnet110", "cifar100", attention="bam", num_classes=10).eval()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert sorted(model.attention.keys()) == ["layer1", "layer2"]


def test_layout_v1_moves_the_stride():
    v15 = meta_network("resnet50", "imagenet")
    v1 = meta_network("resnet50", "imagenet", layout="v1")
    assert v15.layer2[0].conv2.stride == (2, 2) and v15.layer2[0].conv1.stride == (1, 1)
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    assert count_params(v1) == count_params(v15)
    assert get_network_entry("resnet18").resnet_blocks == "basic"
    meta_network("resnet18", "imagenet", layout="v1")  # same network in both layouts: allowed


def test_options_reach_the_builder():
    assert meta_network("wrn28_10", "cifar100", model_kwargs={"dropout": 0.3}).layer1[0].dropout.p == 0.3
    assert meta_network("resnet50", "cifar100", num_classes=10).fc.out_features == 10
    assert meta_network("densenet100_bc", "cifar100").classifier.out_features == 100
    # SE goes in every block by default (as in Table 10), BAM at the bottlenecks; bam-c = BAM in every block.
    assert len(meta_network("wrn28_8", "cifar100", attention="se").attention) == 12
    assert len(meta_network("wrn28_8", "cifar100", attention="bam-c").attention) == 12
    assert len(meta_network("wrn28_8", "cifar100", attention="se", placement="bottleneck").attention) == 2


def test_attention_as_a_class_or_none():
    from bam import SqueezeExcitation

    # A class goes where a name would (at the bottlenecks unless told), None is the plain network.
    model = meta_network("resnet50", "cifar100", attention=SqueezeExcitation, reduction=8)
    assert list(model.attention) == ["layer1", "layer2", "layer3"]
    assert all(isinstance(m, SqueezeExcitation) for m in model.attention.values())
    for nothing in (None, "none"):
        assert not hasattr(meta_network("resnet50", "cifar100", attention=nothing), "attention")


@pytest.mark.parametrize("kwargs,message", [
    ({"arch": "resnet51"}, "valid names: densenet100_bc"),
    ({"arch": "wrn28_8", "dataset": "imagenet"}, "exists for: cifar100"),
    ({"arch": "resnet50", "dataset": "cifar10"}, "unknown dataset .cifar10.; valid names: .*cifar100.*imagenet"),
    ({"arch": "resnet50", "attention": "bma"}, "valid names: none, bam"),
    ({"arch": "mobilenet_v2", "layout": "v1"}, "ResNet-style networks only"),
    ({"arch": "resnet50", "layout": "v2"}, "valid layouts: v1, v1.5"),
    ({"arch": "resnet50", "model_kwargs": {"dropout": 0.3}}, "does not accept"),
])
def test_bad_names_are_reported(kwargs, message):
    with pytest.raises(ValueError, match=message), torch.device("meta"):
        build_network(**kwargs)


def test_register_network_for_another_dataset():
    from tasks import networks

    @register_network("tiny-test-net", datasets=("cifar100",))
    def tiny(num_classes: int = 100) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))

    try:
        assert "tiny-test-net" in list_networks("cifar100")
        with pytest.raises(ValueError, match="already registered"):
            register_network("tiny-test-net", datasets=("cifar100",))(lambda num_classes=1: None)
        with pytest.raises(ValueError, match="unknown data set .no-such-dataset."):
            register_network("tiny-test-net", datasets=("no-such-dataset",))(tiny)
    finally:
        networks._NETWORKS.pop("tiny-test-net", None)


def test_bam_imports_without_tasks():
    code = "import sys, bam; assert 'tasks' not in sys.modules, 'tasks imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
