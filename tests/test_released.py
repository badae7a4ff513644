"""Released-checkpoint key mapping, checked against networks: the real pytorchcv package and a
restatement of the authors' released module names, both with random weights, in float64."""

import re

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

from bam import attach_attention, convert_released_state_dict, count_params


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every weight and every BN statistic drawn at random, so that a tensor loaded into the wrong
    place (two BN layers of one block swapped, say) changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(7)
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith("running_mean"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) - 0.5)
            elif tensor.dim() == 1:  # BN scales and shifts, biases
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.75 if name.endswith("weight")
                             else torch.rand(tensor.shape, generator=generator) * 0.2 - 0.1)
            else:  # He-uniform scale, so that activations stay of order one through 50 layers
                bound = (6.0 / tensor[0].numel()) ** 0.5
                tensor.copy_((torch.rand(tensor.shape, generator=generator) * 2 - 1) * bound)
    return model.eval()


def assert_same_outputs(released: torch.nn.Module, ours: torch.nn.Module, size: int = 224) -> None:
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        want, got = released.double().eval()(x), ours.double().eval()(x)
    assert want.abs().mean() > 1e-3  # a real signal, not a network that has died out
    # Same arithmetic in another order (adaptive vs fixed pooling, hooks vs inline calls): float64
    # rounding only.
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def torchvision_with_released_bam(arch: str) -> torch.nn.Module:
    model = getattr(tvm, arch)()
    attach_attention(model, "bam-released")
    return model


# -- pytorchcv: the real package ----------------------------------------------------------------------
@pytest.mark.parametrize("name,arch", [("bam_resnet18", "resnet18"), ("bam_resnet50", "resnet50")])
def test_pytorchcv_models_convert_and_compute_the_same(name, arch):
    from pytorchcv.model_provider import get_model  # the test extra installs it

    torch.manual_seed(0)
    released = randomised(get_model(name, pretrained=False), seed=1)  # never downloads
    ours = torchvision_with_released_bam(arch)
    ours.load_state_dict(convert_released_state_dict(released.state_dict(), source="pytorchcv"), strict=True)
    assert_same_outputs(released, ours)


# -- the authors' code: its module names restated ---------------------------------------------------
# A faithful restatement of the names in github Jongchan/attention-module, MODELS/bam.py and
# MODELS/model_resnet.py (ImageNet network type), with the released forward pass. Only what
# decides the state dict's keys and the arithmetic is kept (not their weight initialisation).
class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class ChannelGate(nn.Module):
    def __init__(self, gate_channel, reduction_ratio=16, num_layers=1):
        super().__init__()
        self.gate_c = nn.Sequential()
        self.gate_c.add_module("flatten", Flatten())
        gate_channels = [gate_channel] + [gate_channel // reduction_ratio] * num_layers + [gate_channel]
        for i in range(len(gate_channels) - 2):
            self.gate_c.add_module("gate_c_fc_%d" % i, nn.Linear(gate_channels[i], gate_channels[i + 1]))
            self.gate_c.add_module("gate_c_bn_%d" % (i + 1), nn.BatchNorm1d(gate_channels[i + 1]))
            self.gate_c.add_module("gate_c_relu_%d" % (i + 1), nn.ReLU())
        self.gate_c.add_module("gate_c_fc_final", nn.Linear(gate_channels[-2], gate_channels[-1]))

    def forward(self, in_tensor):
        avg_pool = F.avg_pool2d(in_tensor, in_tensor.size(2), stride=in_tensor.size(2))
        return self.gate_c(avg_pool).unsqueeze(2).unsqueeze(3).expand_as(in_tensor)


class SpatialGate(nn.Module):
    def __init__(self, gate_channel, reduction_ratio=16, dilation_conv_num=2, dilation_val=4):
        super().__init__()
        self.gate_s = nn.Sequential()
        reduced = gate_channel // reduction_ratio
        self.gate_s.add_module("gate_s_conv_reduce0", nn.Conv2d(gate_channel, reduced, kernel_size=1))
        self.gate_s.add_module("gate_s_bn_reduce0", nn.BatchNorm2d(reduced))
        self.gate_s.add_module("gate_s_relu_reduce0", nn.ReLU())
        for i in range(dilation_conv_num):
            self.gate_s.add_module("gate_s_conv_di_%d" % i, nn.Conv2d(reduced, reduced, kernel_size=3,
                                                                      padding=dilation_val, dilation=dilation_val))
            self.gate_s.add_module("gate_s_bn_di_%d" % i, nn.BatchNorm2d(reduced))
            self.gate_s.add_module("gate_s_relu_di_%d" % i, nn.ReLU())
        self.gate_s.add_module("gate_s_conv_final", nn.Conv2d(reduced, 1, kernel_size=1))

    def forward(self, in_tensor):
        return self.gate_s(in_tensor).expand_as(in_tensor)


class BAM(nn.Module):
    def __init__(self, gate_channel):
        super().__init__()
        self.channel_att = ChannelGate(gate_channel)
        self.spatial_att = SpatialGate(gate_channel)

    def forward(self, in_tensor):
        att = 1 + torch.sigmoid(self.channel_att(in_tensor) * self.spatial_att(in_tensor))
        return att * in_tensor


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + residual)


class ReleasedResNet(nn.Module):
    """model_resnet.py's ResidualNet("ImageNet", 18, 1000, "BAM") with basic blocks."""

    def __init__(self, layers=(2, 2, 2, 2), num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.avgpool = nn.AvgPool2d(7)
        self.bam1, self.bam2, self.bam3 = BAM(64), BAM(128), BAM(256)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.fc = nn.Linear(512 * BasicBlock.expansion, num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * BasicBlock.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * BasicBlock.expansion))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.bam1(self.layer1(x))
        x = self.bam2(self.layer2(x))
        x = self.bam3(self.layer3(x))
        x = self.avgpool(self.layer4(x))
        return self.fc(x.view(x.size(0), -1))


def released_checkpoint(model: nn.Module) -> dict:
    """What the released training script saves: the DataParallel state dict inside a dict."""
    return {"epoch": 90, "arch": "resnet", "best_prec1": 0.0,
            "state_dict": {"module." + k: v for k, v in model.state_dict().items()}}


def test_released_code_names_convert_and_compute_the_same():
    torch.manual_seed(0)
    released = randomised(ReleasedResNet(), seed=2)
    assert "module.bam1.channel_att.gate_c.gate_c_fc_0.weight" in released_checkpoint(released)["state_dict"]
    ours = torchvision_with_released_bam("resnet18")
    ours.load_state_dict(convert_released_state_dict(released_checkpoint(released)), strict=True)
    assert_same_outputs(released, ours)


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
        "features.stage1.unit3.res_unit.body.conv3.bn.weight": torch.zeros(1),
        "features.stage2.unit1.res_unit.identity_conv.conv.weight": torch.zeros(1),
    }, source="pytorchcv")
    assert list(converted) == ["attention.layer3.spatial.dilated.0.conv.bias",
                               "layer1.2.bn3.weight", "layer2.0.downsample.0.weight"]


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
