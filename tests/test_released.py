"""Released-checkpoint key mapping: fake released state dicts built by independent inverse maps."""

import re

import pytest
import torch
import torchvision.models as tvm

from bam import attach_attention, convert_released_state_dict, count_params


def released_resnet(arch="resnet18", seed=0):
    torch.manual_seed(seed)
    model = getattr(tvm, arch)(num_classes=10)
    attach_attention(model, "bam-released", input_size=(3, 32, 32))
    for module in model.modules():  # non-trivial BN statistics, so a misplaced one shows
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            module.num_batches_tracked.fill_(7)
    return model.eval()


# The released code's names of one BAM's parts, written out by hand from MODELS/bam.py.
JONGCHAN_PARTS = {
    "channel.fc1": "channel_att.gate_c.gate_c_fc_0",
    "channel.bn1": "channel_att.gate_c.gate_c_bn_1",
    "channel.fc2": "channel_att.gate_c.gate_c_fc_final",
    "spatial.reduce.conv": "spatial_att.gate_s.gate_s_conv_reduce0",
    "spatial.reduce.bn": "spatial_att.gate_s.gate_s_bn_reduce0",
    "spatial.dilated.0.conv": "spatial_att.gate_s.gate_s_conv_di_0",
    "spatial.dilated.0.bn": "spatial_att.gate_s.gate_s_bn_di_0",
    "spatial.dilated.1.conv": "spatial_att.gate_s.gate_s_conv_di_1",
    "spatial.dilated.1.bn": "spatial_att.gate_s.gate_s_bn_di_1",
    "spatial.project": "spatial_att.gate_s.gate_s_conv_final",
}
# pytorchcv's names (pytorchcv/models/bamresnet.py) of the same parts.
PYTORCHCV_PARTS = {
    "channel.fc1": "ch_att.init_fc.fc",
    "channel.bn1": "ch_att.init_fc.bn",
    "channel.fc2": "ch_att.final_fc",
    "spatial.reduce.conv": "sp_att.init_conv.conv",
    "spatial.reduce.bn": "sp_att.init_conv.bn",
    "spatial.dilated.0.conv": "sp_att.dil_convs.conv1.conv",
    "spatial.dilated.0.bn": "sp_att.dil_convs.conv1.bn",
    "spatial.dilated.1.conv": "sp_att.dil_convs.conv2.conv",
    "spatial.dilated.1.bn": "sp_att.dil_convs.conv2.bn",
    "spatial.project": "sp_att.final_conv",
}


def to_jongchan(key: str) -> str:
    if not key.startswith("attention."):
        return "module." + key  # DataParallel prefix, network names as torchvision's
    _, layer, rest = key.split(".", 2)
    part, param = rest.rsplit(".", 1)
    return f"module.bam{layer[-1]}.{JONGCHAN_PARTS[part]}.{param}"


def to_pytorchcv(key: str) -> str:
    parts = key.split(".")
    if parts[0] == "attention":
        part, param = ".".join(parts[2:-1]), parts[-1]
        return f"features.stage{int(parts[1][-1]) + 1}.unit1.bam.{PYTORCHCV_PARTS[part]}.{param}"
    if parts[0] == "fc":
        return f"output.{parts[1]}"
    if parts[0] in ("conv1", "bn1"):
        return f"features.init_block.conv.{'conv' if parts[0] == 'conv1' else 'bn'}.{parts[1]}"
    stage, block, layer = parts[0][-1], int(parts[1]) + 1, parts[2]
    prefix = f"features.stage{stage}.unit{block}"
    if layer == "downsample":
        return f"{prefix}.identity_conv.{'conv' if parts[3] == '0' else 'bn'}.{parts[4]}"
    kind, index = layer[:-1], layer[-1]
    return f"{prefix}.body.conv{index}.{kind}.{parts[3]}"


@pytest.mark.parametrize("source,inverse,arch", [
    ("jongchan", to_jongchan, "resnet18"), ("pytorchcv", to_pytorchcv, "resnet18"),
    ("pytorchcv", to_pytorchcv, "resnet50"),  # bottleneck units: body.conv3, identity_conv
])
def test_round_trip_gives_identical_outputs(source, inverse, arch):
    model = released_resnet(arch, seed=0)
    released = {inverse(k): v.clone() for k, v in model.state_dict().items()}
    assert len(released) == len(model.state_dict())
    fresh = released_resnet(arch, seed=1)
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(fresh(x), model(x))
    fresh.load_state_dict(convert_released_state_dict(released, source=source), strict=True)
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


def test_hand_written_keys():
    converted = convert_released_state_dict({
        "module.bam2.channel_att.gate_c.gate_c_fc_0.weight": torch.zeros(1),
        "bam3.spatial_att.gate_s.gate_s_bn_di_1.running_var": torch.zeros(1),
        "module.layer4.2.downsample.1.num_batches_tracked": torch.zeros(1),
    })
    assert list(converted) == ["attention.layer2.channel.fc1.weight",
                               "attention.layer3.spatial.dilated.1.bn.running_var",
                               "layer4.2.downsample.1.num_batches_tracked"]
    converted = convert_released_state_dict({
        "features.stage4.unit1.bam.sp_att.dil_convs.conv1.conv.bias": torch.zeros(1),
        "features.stage1.unit3.body.conv3.bn.weight": torch.zeros(1),
        "features.stage2.unit1.identity_conv.conv.weight": torch.zeros(1),
    }, source="pytorchcv")
    assert list(converted) == ["attention.layer3.spatial.dilated.0.conv.bias",
                               "layer1.2.bn3.weight", "layer2.0.downsample.0.weight"]


def test_checkpoint_wrapper_accepted():
    model = released_resnet()
    checkpoint = {"epoch": 90, "best_prec1": 0.0,
                  "state_dict": {to_jongchan(k): v for k, v in model.state_dict().items()}}
    assert set(convert_released_state_dict(checkpoint)) == set(model.state_dict())


def test_unknown_keys_are_listed():
    with pytest.raises(ValueError, match=r"2 key\(s\).*bam1\.channel_att\.gate_c\.gate_c_fc_1\.weight.*extra"):
        convert_released_state_dict({
            "bam1.channel_att.gate_c.gate_c_fc_1.weight": torch.zeros(1),  # a second hidden layer
            "extra.weight": torch.zeros(1),
            "conv1.weight": torch.zeros(1),
        })
    with pytest.raises(ValueError, match=re.escape("source")):
        convert_released_state_dict({}, source="timm")
    with pytest.raises(ValueError, match="jongchan"):  # the pytorchcv rules refuse released names
        convert_released_state_dict({"bam1.channel_att.gate_c.gate_c_fc_0.weight": torch.zeros(1)},
                                    source="pytorchcv")


def test_parameter_count_matches_pytorchcv_port():
    # pytorchcv's own test asserts bam_resnet50 has 25,915,099 weights (no final BN in BAM).
    with torch.device("meta"):
        model = tvm.resnet50()
    attach_attention(model, "bam-released")
    assert count_params(model) == 25_915_099
