"""Placement found by tracing the network: the paper's bottlenecks, BAM-C blocks, attaching."""

import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

from bam import BAM, CBAM, SqueezeExcitation, attach_attention, count_params, find_blocks, find_bottlenecks
from bam.counting import to_resnet_v1
from bam.placement import insertion_points


def meta(builder, **kwargs) -> nn.Module:
    """Shapes only: building and tracing on the meta device costs no compute."""
    with torch.device("meta"):
        return builder(**kwargs)


def bam_params(channels) -> int:
    return sum(count_params(BAM(c)) for c in channels)


# ------------------------------------------------------------------------ torchvision networks
@pytest.mark.parametrize("builder,channels", [
    (tvm.resnet18, [64, 128, 256]), (tvm.resnet50, [256, 512, 1024]),
    (tvm.resnet101, [256, 512, 1024]), (tvm.resnext50_32x4d, [256, 512, 1024]),
    (tvm.wide_resnet50_2, [256, 512, 1024]),
])
def test_resnet_family_bottlenecks_are_the_papers(builder, channels):
    model = meta(builder)
    points = insertion_points(model)
    assert [p.path for p in points] == ["layer1", "layer2", "layer3"]
    assert [p.channels for p in points] == channels
    assert [p.size for p in points] == [(56, 56), (28, 28), (14, 14)]
    assert find_bottlenecks(to_resnet_v1(model)) == ["layer1", "layer2", "layer3"]  # v1 layout too


def test_resnet_placement_on_other_input_sizes():
    model = meta(tvm.resnet18)
    assert find_bottlenecks(model, (3, 64, 64)) == ["layer1", "layer2", "layer3"]
    points = insertion_points(model, input_size=(3, 96, 160))  # non-square
    assert [p.size for p in points] == [(24, 40), (12, 20), (6, 10)]


def test_mobilenet_v2_before_each_stride_two_block():
    points = insertion_points(meta(tvm.mobilenet_v2))
    # stride-2 inverted residuals are features.2/4/7/14; the 112x112 level after the stem
    # holds features.1 (a depthwise + pointwise block), so it counts as a stage.
    assert [(p.path, p.channels) for p in points] == [
        ("features.1", 16), ("features.3", 24), ("features.6", 32), ("features.13", 96)]


def test_squeezenet_before_max_pools_two_and_three():
    model = meta(tvm.squeezenet1_1)
    points = insertion_points(model)
    assert [(p.path, p.channels, p.size) for p in points] == [
        ("features.4", 128, (55, 55)), ("features.7", 256, (27, 27))]
    # the stem level (conv + ReLU before the first max pool) is excluded; Table 4: 1.24M -> 1.26M
    base = count_params(model)
    attach_attention(model, "bam")
    assert round(base / 1e6, 2) == 1.24 and round(count_params(model) / 1e6, 2) == 1.26


def test_densenet_before_each_transition():
    points = insertion_points(meta(tvm.densenet121))
    assert [(p.path, p.channels) for p in points] == [
        ("features.denseblock1", 256), ("features.denseblock2", 512), ("features.denseblock3", 1024)]


@pytest.mark.parametrize("builder,expected", [
    # squeeze-excitation 1x1 maps inside the stride-2 blocks do not count as resolution levels
    (tvm.efficientnet_b0, [("features.1", 16), ("features.2", 24), ("features.3", 40), ("features.5", 112)]),
    # channels-last tensors inside the blocks (N x H x W x C) are not read as resolutions
    (tvm.convnext_tiny, [("features.1", 96), ("features.3", 192), ("features.5", 384)]),
    # a flat Sequential: the 224 and 112 levels hold one conv each, so they are stem
    (tvm.vgg11, [("features.9", 256), ("features.14", 512), ("features.19", 512)]),
])
def test_other_families(builder, expected):
    points = insertion_points(meta(builder))
    assert [(p.path, p.channels) for p in points] == expected
    assert [p.size[0] for p in points] == [112, 56, 28, 14][-len(expected):]


# ------------------------------------------------------------------------------ BAM-C (blocks)
def test_blocks_of_resnets_are_every_residual_block():
    assert find_blocks(meta(tvm.resnet18)) == [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]
    depths = [3, 4, 6, 3]
    assert find_blocks(meta(tvm.resnet50)) == [
        f"layer{s + 1}.{b}" for s, n in enumerate(depths) for b in range(n)]


def test_blocks_of_compact_and_dense_networks():
    assert find_blocks(meta(tvm.mobilenet_v2)) == [f"features.{i}" for i in range(1, 18)]
    assert find_blocks(meta(tvm.squeezenet1_1)) == [f"features.{i}" for i in (3, 4, 6, 7, 9, 10, 11, 12)]
    depths = [3, 3, 9, 3]  # ConvNeXt blocks: a depthwise conv and two Linear (pointwise) layers
    assert find_blocks(meta(tvm.convnext_tiny)) == [
        f"features.{2 * s + 1}.{b}" for s, n in enumerate(depths) for b in range(n)]
    blocks = find_blocks(meta(tvm.densenet121))
    assert len(blocks) == 6 + 12 + 24 + 16 and blocks[0] == "features.denseblock1.denselayer1"


def test_block_placement_parameter_count():
    model = meta(tvm.resnet50)
    base = count_params(model)
    attach_attention(model, "bam", placement="block")
    assert len(model.attention) == 16
    assert count_params(model) - base == bam_params([256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3)


# --------------------------------------------------------------------- networks it has not seen
class VggLike(nn.Module):
    """Stages that end with their own pooling, wrapped as a backbone that returns logits."""

    def __init__(self):
        super().__init__()

        def stage(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))

        self.stages = nn.Sequential(stage(3, 8), stage(8, 16), stage(16, 32))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.stages(x))


class Wrapped(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.backbone = net

    def forward(self, x):
        return self.backbone(x)


def test_stage_ending_with_pool_puts_attention_before_the_pool():
    points = insertion_points(VggLike(), input_size=(3, 32, 32))
    # right before each max pool, on the ReLU output (not before the stage's first conv); the
    # last pool (8x8 -> 4x4) is a bottleneck too, unlike the head's global pooling (4x4 -> 1x1)
    assert [(p.path, p.channels, p.size) for p in points] == [
        ("stages.0.3", 8, (32, 32)), ("stages.1.3", 16, (16, 16)), ("stages.2.3", 32, (8, 8))]
    assert find_blocks(VggLike(), (3, 32, 32)) == ["stages.0", "stages.1", "stages.2"]


def test_chain_of_single_conv_stages_is_read_to_its_layers():
    """No blocks (each stage one conv): the site is the last map before the strided stage."""
    def stage(channels_in, channels_out, stride):
        return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, stride, 1), nn.BatchNorm2d(channels_out),
                             nn.ReLU())

    chain = nn.Sequential(nn.Sequential(stage(3, 16, 1), stage(16, 16, 1), stage(16, 32, 2), stage(32, 32, 1)),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5))
    assert [(p.path, p.channels, p.size) for p in insertion_points(chain, input_size=(3, 16, 16))] == [
        ("0.1", 16, (16, 16))]


def test_wrapped_network():
    model = Wrapped(meta(tvm.resnet18))
    assert find_bottlenecks(model) == ["backbone.layer1", "backbone.layer2", "backbone.layer3"]


class SharedActivation(nn.Module):
    """The level's last module is a ReLU reused three times: no hook can go after it alone."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.down, self.conv3 = nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.conv3(self.relu(self.down(x)))


def test_shared_module_is_skipped_with_a_warning():
    with pytest.warns(UserWarning, match="'relu'.*runs 3 times in a forward pass"):
        assert find_bottlenecks(SharedActivation(), (3, 16, 16)) == []


def test_tracing_restores_modes_and_leaves_statistics_alone():
    model = tvm.resnet18(num_classes=10)
    model.train()
    model.layer2.eval()
    before = model.layer1[0].bn1.running_mean.clone()
    find_bottlenecks(model, (3, 32, 32))
    assert model.training and not model.layer2.training and model.layer2[0].bn1.training is False
    assert model.layer3.training
    torch.testing.assert_close(model.layer1[0].bn1.running_mean, before)
    assert not model.layer1._forward_hooks and not model.layer1._forward_pre_hooks


# -------------------------------------------------------------------------------------- attach
def resnet18_bam(**kwargs):
    torch.manual_seed(0)
    model = tvm.resnet18(num_classes=10)
    targets = attach_attention(model, "bam", input_size=(3, 32, 32), **kwargs)
    return model.eval(), targets


def test_attached_forward_equals_manual_composition():
    model, targets = resnet18_bam()
    assert targets == ["layer1", "layer2", "layer3"]
    assert set(model.attention) == {"layer1", "layer2", "layer3"}
    x = torch.randn(2, 3, 32, 48)
    # the same weights without hooks, composed by hand with the attached modules
    m = tvm.resnet18(num_classes=10).eval()
    m.load_state_dict(model.state_dict(), strict=False)
    h = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    h = model.attention["layer1"](m.layer1(h))
    h = model.attention["layer2"](m.layer2(h))
    h = model.attention["layer3"](m.layer3(h))
    h = m.avgpool(m.layer4(h)).flatten(1)
    torch.testing.assert_close(model(x), m.fc(h))
    assert not torch.allclose(m(x), model(x))  # BAM really changes the output


def test_tracing_an_attached_model_ignores_its_attention():
    model, targets = resnet18_bam()
    assert find_bottlenecks(model, (3, 32, 32)) == targets
    assert find_blocks(model, (3, 32, 32)) == [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]


def test_base_parameter_names_unchanged_and_pretrained_weights_load():
    plain = tvm.resnet18(num_classes=10)
    model, _ = resnet18_bam()
    keys = set(model.state_dict())
    assert {k for k in keys if not k.startswith("attention.")} == set(plain.state_dict())
    result = model.load_state_dict(plain.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all(k.startswith("attention.") for k in result.missing_keys)
    torch.testing.assert_close(model.conv1.weight, plain.conv1.weight)


def test_attach_twice_none_and_bad_arguments():
    model, _ = resnet18_bam()
    with pytest.raises(ValueError, match="already has attention attached"):
        attach_attention(model, "bam", input_size=(3, 32, 32))
    plain = tvm.resnet18(num_classes=10)
    assert attach_attention(plain, "none") == [] and not hasattr(plain, "attention")
    with pytest.raises(ValueError, match="placement"):
        attach_attention(plain, "bam", placement="everywhere")
    with pytest.raises(ValueError, match="valid names"):
        attach_attention(plain, "bma", input_size=(3, 32, 32))
    with pytest.raises(ValueError, match="input_size"):
        find_bottlenecks(plain, (32, 32))
    with pytest.raises(ValueError, match="no bottleneck insertion point"):
        attach_attention(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)), "bam", input_size=(3, 8, 8))
    with pytest.raises(ValueError, match="no block insertion point .* two or more convolutions"):
        attach_attention(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)), "bam", placement="block",
                         input_size=(3, 8, 8))


def test_attention_kwargs_and_other_modules():
    model, _ = resnet18_bam(reduction=8, dilation=2)
    assert model.attention["layer1"].channel.fc1.out_features == 8
    assert model.attention["layer1"].spatial.dilated[0].conv.dilation == (2, 2)
    for name, cls in [("se", SqueezeExcitation), ("cbam", CBAM)]:
        net = tvm.resnet18(num_classes=10)
        targets = attach_attention(net, name, placement="block", input_size=(3, 32, 32))
        assert len(targets) == 8 and all(isinstance(m, cls) for m in net.attention.values())
        assert net.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_attach_a_module_class():
    # A class instead of a registered name: built as cls(channels, **kwargs) at each site.
    net = tvm.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    plain = net(x)
    targets = attach_attention(net, SqueezeExcitation, input_size=(3, 32, 32), reduction=4)
    assert targets == ["layer1", "layer2", "layer3"]
    assert all(type(m) is SqueezeExcitation for m in net.attention.values())
    assert [m.fc1.out_features for m in net.attention.values()] == [16, 32, 64]  # channels // 4
    assert not torch.allclose(net(x), plain)  # the hooks run the class's modules


def test_attach_nothing_and_wrong_kinds():
    plain = tvm.resnet18(num_classes=10)
    assert attach_attention(plain, None) == [] and not hasattr(plain, "attention")
    with pytest.raises(TypeError, match="nn.Module subclass"):
        attach_attention(plain, dict, input_size=(3, 32, 32))  # a class, but no nn.Module
    assert not hasattr(plain, "attention")


def test_deepcopy_and_pickle_keep_working_hooks():
    model, _ = resnet18_bam()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for clone in (copy.deepcopy(model), torch.load(buffer, weights_only=False),
                  pickle.loads(pickle.dumps(model))):
        torch.testing.assert_close(clone(x), expected)
        # the clone's hooks use the clone's own attention modules
        with torch.no_grad():
            clone.attention["layer2"].channel.fc2.bias.add_(1.0)
        assert not torch.allclose(clone(x), expected)
        torch.testing.assert_close(model(x), expected)


def test_training_step_with_attention():
    model, _ = resnet18_bam()
    model.train()
    loss = model(torch.randn(2, 3, 32, 32)).logsumexp(1).mean()
    loss.backward()
    assert model.attention["layer3"].spatial.project.weight.grad is not None


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stage1 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1))
        self.stage2 = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
                                    nn.Conv2d(16, 16, 3, padding=1))
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.stage2(self.stage1(self.stem(x))).mean((2, 3)))


def test_torch_compile_with_attention_hooks():
    torch.manual_seed(1)
    model = TinyNet()
    assert attach_attention(model, "bam", input_size=(3, 16, 16), reduction=4) == ["stage1"]
    model.eval()
    x = torch.randn(2, 3, 16, 12)
    compiled = torch.compile(model, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x))
    x2 = torch.randn(2, 3, 16, 12)
    assert not torch.allclose(model(x2), model(x))


# ------------------------------------------------------------ strides, stems, layouts, lists
def conv_relu(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.ReLU())


class ResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(channels, channels, 3, padding=1), nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class BlurPool(nn.Module):
    """A stride-2 blur as a module of its own type (as timm's BlurPool2d): no conv, no pool."""

    def __init__(self, channels):
        super().__init__()
        self.register_buffer("filt", torch.ones(channels, 1, 3, 3) / 9)

    def forward(self, x):
        return F.conv2d(x, self.filt, stride=2, padding=1, groups=x.shape[1])


class LateStrideBlock(nn.Module):
    """Two convs at the input resolution, then the stride, then a conv; a downsampling shortcut
    (anti-aliased ResNets, ResNeSt, Xception blocks)."""

    def __init__(self, cin, cout, blur=False):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, padding=1), nn.Conv2d(cout, cout, 3, padding=1)
        self.down = BlurPool(cout) if blur else nn.AvgPool2d(2)
        self.conv3 = nn.Conv2d(cout, cout, 1)
        self.shortcut = nn.Sequential(BlurPool(cin) if blur else nn.AvgPool2d(2), nn.Conv2d(cin, cout, 1))

    def forward(self, x):
        return F.relu(self.conv3(self.down(F.relu(self.conv2(F.relu(self.conv1(x)))))) + self.shortcut(x))


class LateStrideNet(nn.Module):
    """A deep stem (three convs, the first strided, then a max pool) and stages whose first block
    strides late."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_relu(3, 8, 2), conv_relu(8, 8), conv_relu(8, 16))
        self.pool = nn.MaxPool2d(2)
        self.stage1 = nn.Sequential(ResidualBlock(16), ResidualBlock(16))
        self.stage2 = nn.Sequential(LateStrideBlock(16, 32), ResidualBlock(32))
        self.stage3 = nn.Sequential(LateStrideBlock(32, 64, blur=True), ResidualBlock(64))

    def forward(self, x):
        return self.stage3(self.stage2(self.stage1(self.pool(self.stem(x))))).mean((2, 3))


def test_late_strides_blur_pooling_and_the_stem():
    model = LateStrideNet()
    # before each late-stride block, not inside it; the blur is a downsampling; no stem site
    assert find_bottlenecks(model, (3, 64, 64)) == ["stage1", "stage2"]
    assert find_bottlenecks(model, (3, 64, 64), stem=True) == ["stem", "stage1", "stage2"]


class ChannelsLastStage(nn.Module):
    """Linear layers on N x H x W x C maps, as in ConvNeXt and MambaOut blocks."""

    def __init__(self, channels):
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(channels), nn.Linear(channels, 2 * channels), nn.Linear(
            2 * channels, channels)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class ChannelsLastNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.stage1 = nn.Sequential(ChannelsLastStage(8), ChannelsLastStage(8))
        self.down = nn.Conv2d(8, 16, 2, stride=2)
        self.stage2 = ChannelsLastStage(16)

    def forward(self, x):
        x = self.stage1(self.stem(x).permute(0, 2, 3, 1))
        return self.stage2(self.down(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


def test_channels_last_stage_is_refined_channels_first():
    torch.manual_seed(0)
    model = ChannelsLastNet()
    points = insertion_points(model, input_size=(3, 32, 48))
    assert [(p.path, p.channels, p.size, p.channels_last) for p in points] == [("stage1", 8, (8, 12), True)]
    attach_attention(model, "bam", input_size=(3, 32, 48), reduction=4)
    model.eval()
    x = torch.randn(2, 3, 32, 48)
    stage1 = model.stage1[1](model.stage1[0](model.stem(x).permute(0, 2, 3, 1)))  # its blocks: no hook
    refined = model.attention["stage1"](stage1.permute(0, 3, 1, 2))
    expected = model.stage2(model.down(refined).permute(0, 2, 3, 1))
    torch.testing.assert_close(model(x), expected)


class ListBlock(nn.Module):
    """Takes and returns [features, skip], as SelecSLS blocks do."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1, self.conv2 = conv_relu(cin, cout, stride), conv_relu(cout, cout)

    def forward(self, x):
        x = x if isinstance(x, list) else [x]
        out = self.conv2(self.conv1(x[0]))
        return [out, out]


def test_site_returning_a_list_moves_to_the_module_producing_its_map():
    model = nn.Sequential(conv_relu(3, 8, 2), ListBlock(8, 8), ListBlock(8, 16), ListBlock(16, 32, stride=2))
    assert find_bottlenecks(model, (3, 32, 32)) == ["2.conv2"]


# ------------------------------------------------------------------------------- named sites
def test_named_targets_skip_the_trace_choice():
    torch.manual_seed(0)
    model = tvm.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    plain = model(x)
    assert attach_attention(model, "bam", input_size=(3, 32, 32), targets=["layer2", "layer4.1"]) == [
        "layer2", "layer4.1"]
    assert {key: m.channels for key, m in model.attention.items()} == {"layer2": 128, "layer4_1": 512}
    assert not model.attention.training  # the model's mode
    assert not torch.allclose(model(x), plain)


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.spare = conv_relu(3, 8), nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return self.body(x)


class PairOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x), x


def test_named_targets_are_validated():
    model = tvm.resnet18(num_classes=10)
    size = (3, 32, 32)
    with pytest.raises(ValueError, match=r"no module 'layer5'.*nearby names: layer1, layer2, layer3, layer4, layer4.0, layer4.1"):
        attach_attention(model, "bam", input_size=size, targets=["layer5"])
    with pytest.raises(ValueError, match=r"no module 'layer1.7'.*nearby names: layer1.0, layer1.1"):
        attach_attention(model, "bam", input_size=size, targets=["layer1.7"])
    with pytest.raises(ValueError, match="named twice"):
        attach_attention(model, "bam", input_size=size, targets=["layer1", "layer1"])
    with pytest.raises(ValueError, match="non-empty list"):
        attach_attention(model, "bam", input_size=size, targets="layer1")
    with pytest.raises(ValueError, match=r"'relu' runs 3 times in a forward pass"):
        attach_attention(SharedActivation(), "bam", input_size=(3, 16, 16), targets=["relu"])
    with pytest.raises(ValueError, match=r"'spare' does not run"):
        attach_attention(Unused(), "bam", input_size=size, targets=["spare"])
    with pytest.raises(ValueError, match=r"'0' does not return a feature map"):
        attach_attention(nn.Sequential(PairOut()), "bam", input_size=size, targets=["0"])
    trunk = nn.Sequential(*list(tvm.resnet18().children())[:-2])  # layer1 is refined in layer1.1
    with pytest.raises(ValueError, match=r"after '4.1' in '4.1' \(the attention after '4' is there"):
        attach_attention(trunk, "bam", input_size=size, targets=["4", "4.1"])
    assert not hasattr(model, "attention") and not hasattr(trunk[4][1], "attention")  # nothing left behind


# ----------------------------------------------------------------- the repository's CIFAR nets
@pytest.mark.parametrize("arch,expected,channels", [
    ("resnet50", ["layer1", "layer2", "layer3"], [256, 512, 1024]),
    ("preresnet110", ["layer1", "layer2"], [64, 128]),
    ("wrn28_8", ["layer1", "layer2"], [128, 256]),
    ("resnext29_8x64d", ["layer1", "layer2"], [256, 512]),
    ("densenet100_bc", ["features.denseblock1", "features.denseblock2"], [216, 300]),
])
def test_cifar_networks(arch, expected, channels):
    from tasks.networks import build_network  # the registry with the repository's networks in it

    with torch.device("meta"):
        model = build_network(arch, "cifar100")
    points = insertion_points(model, input_size=(3, 32, 32))
    assert [p.path for p in points] == expected
    assert [p.channels for p in points] == channels
    assert [p.size for p in points] == [(32, 32), (16, 16), (8, 8)][:len(expected)]
