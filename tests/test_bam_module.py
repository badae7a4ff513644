"""BAM, SE and CBAM against direct re-computations of their equations with torch.nn.functional."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bam import (BAM, CBAM, ChannelGate, SpatialGate, SqueezeExcitation, create_attention, get_attention,
                 list_attentions)
from bam.registry import attention_class, register_attention


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine parameters and running statistics, so no BN is an identity."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.data = torch.rand(m.weight.shape, generator=gen) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=gen)
            m.running_mean = torch.randn(m.running_mean.shape, generator=gen)
            m.running_var = torch.rand(m.running_var.shape, generator=gen) + 0.5
    return module


# ------------------------------------------------------------- independent reference (eqs. 1-4)
def ref_bn(x, bn, training=False):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    if training:  # batch statistics, biased variance
        dims = [0] + list(range(2, x.dim()))
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    return (x - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps) * bn.weight.view(shape) \
        + bn.bias.view(shape)


def ref_channel(x, gate, final_bn=True, training=False):
    pooled = x.sum(dim=(2, 3)) / (x.shape[2] * x.shape[3])
    hidden = pooled @ gate.fc1.weight.t() + gate.fc1.bias
    hidden = torch.clamp(ref_bn(hidden, gate.bn1, training), min=0)
    out = hidden @ gate.fc2.weight.t() + gate.fc2.bias
    if final_bn:
        out = ref_bn(out, gate.bn, training)
    return out.view(x.shape[0], x.shape[1], 1, 1)


def ref_conv_bn_relu(x, block, dilation=1):
    pad = dilation * (block.conv.kernel_size[0] - 1) // 2
    y = F.conv2d(x, block.conv.weight, block.conv.bias, padding=pad, dilation=dilation)
    return torch.clamp(ref_bn(y, block.bn), min=0)


def ref_spatial(x, gate, dilation=4, final_bn=True):
    y = ref_conv_bn_relu(x, gate.reduce)
    for block in gate.dilated:
        y = ref_conv_bn_relu(y, block, dilation)
    y = F.conv2d(y, gate.project.weight, gate.project.bias)
    return ref_bn(y, gate.bn) if final_bn else y


def ref_bam(x, bam, combine="sum", identity=True, dilation=4, final_bn=True, branches="both"):
    mc = ref_channel(x, bam.channel, final_bn) if branches != "spatial" else None
    ms = ref_spatial(x, bam.spatial, dilation, final_bn) if branches != "channel" else None
    if mc is None:
        m = 1 / (1 + torch.exp(-ms))
    elif ms is None:
        m = 1 / (1 + torch.exp(-mc))
    elif combine == "sum":
        m = 1 / (1 + torch.exp(-(mc + ms)))
    elif combine == "max":
        m = 1 / (1 + torch.exp(-torch.where(mc > ms, mc, ms)))
    elif combine == "product":
        m = 1 / (1 + torch.exp(-(mc * ms)))
    else:
        m = 1 / (1 + torch.exp(-mc)) + 1 / (1 + torch.exp(-ms))
    return x + x * m if identity else x * m


def expected_params(c, r=16, n=2, final_bn=True, branches="both"):
    """Parameter count by formula: weights + biases of convs/linears + BN affine (2 per channel)."""
    h = max(c // r, 1)
    channel = (c * h + h) + 2 * h + (h * c + c) + (2 * c if final_bn else 0)
    spatial = (c * h + h) + 2 * h + n * (9 * h * h + h + 2 * h) + (h + 1) + (2 if final_bn else 0)
    return {"both": channel + spatial, "channel": channel, "spatial": spatial}[branches]


def count(module):
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------ equations
@pytest.mark.parametrize("combine", ["sum", "max", "product", "sigmoid_sum"])
@pytest.mark.parametrize("identity", [True, False])
def test_bam_matches_equations(combine, identity):
    torch.manual_seed(0)
    bam = randomize(BAM(32, reduction=4, combine=combine, identity=identity)).eval()
    x = torch.randn(3, 32, 9, 13)  # non-square
    torch.testing.assert_close(bam(x), ref_bam(x, bam, combine, identity), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("branches", ["channel", "spatial"])
def test_single_branch(branches):
    torch.manual_seed(1)
    bam = randomize(BAM(32, reduction=8, branches=branches)).eval()
    assert (bam.channel is None) == (branches == "spatial")
    assert (bam.spatial is None) == (branches == "channel")
    x = torch.randn(2, 32, 7, 5)
    torch.testing.assert_close(bam(x), ref_bam(x, bam, branches=branches), rtol=1e-5, atol=1e-5)
    assert count(bam) == expected_params(32, 8, branches=branches)


def test_training_mode_uses_batch_statistics():
    torch.manual_seed(2)
    bam = randomize(BAM(16, reduction=4))
    x = torch.randn(4, 16, 6, 6)
    mc = bam.channel(x)  # training mode: batch statistics in both BN1d layers
    torch.testing.assert_close(mc, ref_channel(x, bam.channel, training=True), rtol=1e-5, atol=1e-5)


def test_released_variant_matches_released_forward():
    """The released code: x * (1 + sigmoid(Mc * Ms)), no final BN, biases everywhere."""
    torch.manual_seed(3)
    bam = randomize(create_attention("bam-released", 64)).eval()
    assert isinstance(bam.channel.bn, nn.Identity) and isinstance(bam.spatial.bn, nn.Identity)
    x = torch.randn(2, 64, 10, 10)
    sd = {k: v.clone() for k, v in bam.state_dict().items()}
    # Written out with plain tensor ops, the way the released module computes it.
    v = x.mean((2, 3)) @ sd["channel.fc1.weight"].t() + sd["channel.fc1.bias"]
    v = (v - sd["channel.bn1.running_mean"]) / (sd["channel.bn1.running_var"] + 1e-5).sqrt()
    v = torch.relu(v * sd["channel.bn1.weight"] + sd["channel.bn1.bias"])
    mc = (v @ sd["channel.fc2.weight"].t() + sd["channel.fc2.bias"])[:, :, None, None]
    s = x
    for name, dil in [("reduce", 1), ("dilated.0", 4), ("dilated.1", 4)]:
        s = F.conv2d(s, sd[f"spatial.{name}.conv.weight"], sd[f"spatial.{name}.conv.bias"],
                     padding=dil if dil > 1 else 0, dilation=dil)
        s = F.batch_norm(s, sd[f"spatial.{name}.bn.running_mean"], sd[f"spatial.{name}.bn.running_var"],
                         sd[f"spatial.{name}.bn.weight"], sd[f"spatial.{name}.bn.bias"])
        s = torch.relu(s)
    ms = F.conv2d(s, sd["spatial.project.weight"], sd["spatial.project.bias"])
    expected = (1 + torch.sigmoid(mc.expand_as(x) * ms.expand_as(x))) * x
    torch.testing.assert_close(bam(x), expected, rtol=1e-5, atol=1e-5)
    assert count(bam) == expected_params(64, final_bn=False)


def test_released_variant_fixes_its_options():
    with pytest.raises(ValueError, match="combine"):
        create_attention("bam-released", 64, combine="sum")


# ---------------------------------------------------------------------- options and parameters
@pytest.mark.parametrize("channels,reduction,num_dilated,final_bn",
                         [(64, 16, 2, True), (64, 4, 2, True), (64, 32, 3, False), (96, 8, 0, True),
                          (8, 16, 1, True)])
def test_parameter_count_formula(channels, reduction, num_dilated, final_bn):
    bam = BAM(channels, reduction=reduction, num_dilated=num_dilated, final_bn=final_bn)
    assert count(bam) == expected_params(channels, reduction, num_dilated, final_bn)
    assert len(bam.spatial.dilated) == num_dilated


def test_paper_module_sizes():
    # The three BAMs of ResNet50 (256/512/1024 channels) add 0.36M: 25.56M -> 25.92M (Table 4).
    assert sum(count(BAM(c)) for c in (256, 512, 1024)) == 361_657
    assert sum(count(BAM(c)) for c in (64, 128, 256)) == 23_893  # ResNet18: 11.69M -> 11.71M


@pytest.mark.parametrize("dilation", [1, 2, 4])
def test_dilation_sets_receptive_field(dilation):
    """A change at one pixel reaches exactly the offsets reachable by two dilated 3x3 convs."""
    torch.manual_seed(4)
    gate = randomize(SpatialGate(32, reduction=2, dilation=dilation)).eval()
    x = torch.randn(1, 32, 21, 21)
    x2 = x.clone()
    x2[0, :, 10, 10] += 3.0
    changed = (gate(x2) - gate(x)).abs()[0, 0] > 1e-6
    rows, cols = torch.nonzero(changed, as_tuple=True)
    reachable = {-2 * dilation, -dilation, 0, dilation, 2 * dilation}
    assert {int(r) - 10 for r in rows} <= reachable and {int(c) - 10 for c in cols} <= reachable
    assert int((rows - 10).abs().max()) == 2 * dilation  # the full extent is reached
    assert count(gate) == count(SpatialGate(32, reduction=2, dilation=1))


def test_invalid_options_raise():
    with pytest.raises(ValueError, match="combine"):
        BAM(32, combine="mean")
    with pytest.raises(ValueError, match="branches"):
        BAM(32, branches="neither")
    with pytest.raises(ValueError, match="reduction"):
        BAM(32, reduction=0)
    with pytest.raises(ValueError, match=r"B x 32 x H x W"):
        BAM(32).eval()(torch.randn(2, 16, 4, 4))


def test_attention_maps_shapes_and_consistency():
    torch.manual_seed(5)
    bam = randomize(BAM(32, reduction=4)).eval()
    x = torch.randn(2, 32, 5, 8)
    maps = bam.attention_maps(x)
    assert maps["channel"].shape == (2, 32, 1, 1)
    assert maps["spatial"].shape == (2, 1, 5, 8)
    assert maps["combined"].shape == (2, 32, 5, 8)
    torch.testing.assert_close(maps["channel"], ref_channel(x, bam.channel), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(maps["spatial"], ref_spatial(x, bam.spatial), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bam(x), x + x * maps["combined"])


# --------------------------------------------------------------------------- batch of one, etc.
def test_batch_of_one_in_training_mode_is_a_clear_error():
    bam = BAM(32)
    with pytest.raises(ValueError, match=r"batch of at least 2.*model\.eval\(\)"):
        bam(torch.randn(1, 32, 8, 8))
    bam.eval()
    assert bam(torch.randn(1, 32, 8, 8)).shape == (1, 32, 8, 8)
    with pytest.raises(ValueError, match="spatial"):
        BAM(32, branches="spatial")(torch.randn(1, 32, 1, 1))
    assert BAM(32, branches="spatial")(torch.randn(1, 32, 2, 2)).shape == (1, 32, 2, 2)


def test_backward_reaches_every_parameter():
    bam = BAM(32, reduction=4)
    bam(torch.randn(2, 32, 6, 7)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in bam.parameters())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu(dtype):
    torch.manual_seed(6)
    bam = randomize(BAM(64, reduction=8)).eval()
    x = torch.randn(2, 64, 12, 10)
    expected = bam(x)
    try:
        with torch.autocast("cpu", dtype=dtype):
            out = bam(x)
    except RuntimeError as error:  # fp16 autocast support on CPU depends on the build
        pytest.skip(f"autocast {dtype} unsupported on this CPU build: {error}")
    assert out.dtype in (dtype, torch.float32)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)
    # and in training mode with a backward pass
    bam.train()
    with torch.autocast("cpu", dtype=dtype):
        loss = bam(x).float().square().mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in bam.parameters())


def test_channels_last():
    torch.manual_seed(7)
    bam = randomize(BAM(32, reduction=4)).eval()
    x = torch.randn(2, 32, 9, 6)
    expected = bam(x)
    bam_cl = bam.to(memory_format=torch.channels_last)
    out = bam_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_torch_compile():
    torch.manual_seed(8)
    bam = randomize(BAM(16, reduction=4)).eval()
    x = torch.randn(2, 16, 6, 5)
    # aot_eager traces forward and backward graphs like inductor does, without a C++ build
    # (inductor itself was checked by hand: BAM and ResNet18 + BAM match eager to 1e-6).
    compiled = torch.compile(bam, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), bam(x), rtol=1e-5, atol=1e-5)
    bam.train()
    compiled = torch.compile(bam, backend="aot_eager", fullgraph=True)
    compiled(torch.randn(2, 16, 6, 5)).sum().backward()
    assert bam.spatial.project.weight.grad is not None


# --------------------------------------------------------------------------------- SE and CBAM
def test_se_matches_equation():
    torch.manual_seed(9)
    se = SqueezeExcitation(32, reduction=4)
    x = torch.randn(2, 32, 5, 7)
    z = torch.relu(x.mean((2, 3)) @ se.fc1.weight.t() + se.fc1.bias)
    s = 1 / (1 + torch.exp(-(z @ se.fc2.weight.t() + se.fc2.bias)))
    torch.testing.assert_close(se(x), x * s[:, :, None, None], rtol=1e-5, atol=1e-5)
    assert count(se) == 2 * 32 * 8 + 8 + 32


def test_cbam_matches_equation():
    torch.manual_seed(10)
    cbam = randomize(CBAM(32, reduction=4)).eval()
    x = torch.randn(2, 32, 6, 9)

    def mlp(v):
        w1, b1, w2, b2 = (cbam.channel.mlp[0].weight, cbam.channel.mlp[0].bias,
                          cbam.channel.mlp[2].weight, cbam.channel.mlp[2].bias)
        return torch.relu(v @ w1.t() + b1) @ w2.t() + b2

    flat = x.flatten(2)
    mc = torch.sigmoid(mlp(flat.mean(2)) + mlp(flat.max(2).values))[:, :, None, None]
    y = x * mc
    pooled = torch.stack([y.max(1).values, y.mean(1)], dim=1)
    conv = F.conv2d(pooled, cbam.spatial.conv.weight, padding=3)
    ms = torch.sigmoid(ref_bn(conv, cbam.spatial.bn))
    torch.testing.assert_close(cbam(x), y * ms, rtol=1e-5, atol=1e-5)
    # shared MLP (2*C*h + h + C) + 7x7 conv on 2 maps without bias + BN(1)
    assert count(cbam) == 2 * 32 * 8 + 8 + 32 + 2 * 49 + 2


# ------------------------------------------------------------------------------------ registry
def test_registry():
    assert {"bam", "bam-released", "se", "cbam"} <= set(list_attentions())
    assert isinstance(create_attention("bam", 32), BAM)
    assert isinstance(create_attention("se", 32), SqueezeExcitation)
    assert isinstance(create_attention("cbam", 32, kernel_size=3), CBAM)
    assert create_attention("bam", 64, reduction=8).channel.fc1.out_features == 8
    with pytest.raises(ValueError, match="valid names: .*bam.*cbam"):
        create_attention("bma", 32)
    with pytest.raises(ValueError, match="already registered"):
        register_attention("bam", BAM)
    with pytest.raises(ValueError, match="means no attention"):
        register_attention("none", BAM)
    # A partial of a class fixes what it stands for; the registry names the class it builds.
    released = create_attention("bam-released", 32)
    assert isinstance(released, BAM) and released.combine_mode == "product" and attention_class("bam-released") is BAM
    with pytest.raises(ValueError, match="fixes final_bn"):
        create_attention("bam-released", 32, final_bn=True)


class ScaleGate(nn.Module):
    """A user's own attention module: any nn.Module built as ``cls(channels, **kwargs)``."""

    def __init__(self, channels: int, scale: float = 1.0):
        super().__init__()
        self.channels, self.scale = channels, scale
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] * self.scale


def test_create_attention_takes_a_class():
    gate = create_attention(ScaleGate, 8, scale=2.0)
    assert isinstance(gate, ScaleGate) and gate.channels == 8 and gate.scale == 2.0
    assert get_attention(ScaleGate) is ScaleGate
    assert isinstance(create_attention(BAM, 32, reduction=8), BAM)  # a library class works the same way


@pytest.mark.parametrize("nothing", [None, "none", ""])
def test_no_attention_is_none(nothing):
    assert create_attention(nothing, 32) is None
    assert get_attention(nothing) is None
    assert list_attentions(include_none=True)[0] == "none" and "none" not in list_attentions()


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown attention 'bma'; valid names: none, bam, bam-released, cbam, se"):
        create_attention("bma", 32)


@pytest.mark.parametrize("wrong", [dict, SqueezeExcitation(32), len, 3])
def test_anything_else_is_a_clear_type_error(wrong):
    # A class that is no nn.Module, a module instance (it cannot be copied to every site), a function.
    with pytest.raises(TypeError, match=r"registered name \(none, bam, .*\), an nn.Module subclass .* or None"):
        create_attention(wrong, 32)


def test_gates_are_public_modules():
    assert ChannelGate(32, 4)(torch.randn(2, 32, 3, 3)).shape == (2, 32, 1, 1)
    assert SpatialGate(32, 4).eval()(torch.randn(1, 32, 3, 4)).shape == (1, 1, 3, 4)


def test_channel_gate_in_half_precision_pools_without_overflow():
    # 40 x 64 x 64 = 163,840 is past float16's largest value (65,504): the mean is taken from a
    # float32 sum.
    gate = randomize(ChannelGate(8, 4)).eval()
    x = torch.full((2, 8, 64, 64), 40.0)
    expected = gate(x)
    got = gate.half()(x.half())
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), expected, rtol=1e-2, atol=1e-2)
