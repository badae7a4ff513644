"""capture_attention against BAM.attention_maps computed directly on the same inputs."""

import torch
import torchvision.models as tvm
from torch import nn

from bam import BAM, CBAM, SqueezeExcitation, attach_attention, capture_attention


def test_standalone_bam_maps_match_attention_maps():
    torch.manual_seed(0)
    bam = BAM(32, reduction=4).eval()
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), bam)
    x = torch.randn(2, 3, 9, 7)
    with capture_attention(model) as maps:
        out = model(x)
    assert set(maps) == {"1"} and set(maps["1"]) == {"channel", "spatial", "combined"}
    direct = bam.attention_maps(model[0](x))
    for kind in ("channel", "spatial", "combined"):
        torch.testing.assert_close(maps["1"][kind], direct[kind].detach())
        assert not maps["1"][kind].requires_grad and maps["1"][kind].device.type == "cpu"
    feature = model[0](x)
    torch.testing.assert_close(out, feature + feature * maps["1"]["combined"])


def test_attached_resnet_and_hooks_removed():
    torch.manual_seed(1)
    model = tvm.resnet18(num_classes=10)
    attach_attention(model, "bam", input_size=(3, 32, 32))
    model.eval()
    inputs = {}
    for key in ("layer1", "layer2", "layer3"):  # the features each BAM refines
        model.get_submodule(key).register_forward_hook(
            lambda m, i, o, key=key: inputs.__setitem__(key, o.detach()), prepend=True)
    x = torch.randn(2, 3, 32, 40)
    with capture_attention(model) as maps:
        model(x)
    assert set(maps) == {"layer1", "layer2", "layer3"}
    assert maps["layer2"]["channel"].shape == (2, 128, 1, 1)
    assert maps["layer2"]["spatial"].shape == (2, 1, 4, 5)
    for key, feature in inputs.items():
        direct = model.attention[key].attention_maps(feature)
        for kind in ("channel", "spatial", "combined"):
            torch.testing.assert_close(maps[key][kind], direct[kind])
    hooks = sum(len(m._forward_hooks) for m in model.attention.modules())
    assert hooks == 0  # all capture hooks are gone after the block


def test_overwrite_or_accumulate_and_single_branch():
    bam = BAM(16, reduction=4, branches="spatial").eval()
    x1, x2 = torch.randn(2, 16, 5, 5), torch.randn(3, 16, 5, 5)
    with capture_attention(bam) as maps:
        bam(x1)
        bam(x2)
    assert set(maps["attention"]) == {"spatial", "combined"}
    assert maps["attention"]["spatial"].shape[0] == 3
    with capture_attention(bam, accumulate=True) as maps:
        bam(x1)
        bam(x2)
    torch.testing.assert_close(maps["attention"]["combined"],
                               torch.sigmoid(torch.cat([bam.spatial(x1), bam.spatial(x2)])))


def test_se_and_cbam_maps():
    torch.manual_seed(2)
    model = nn.Sequential(SqueezeExcitation(16, 4), CBAM(16, 4)).eval()
    x = torch.randn(2, 16, 6, 6)
    with capture_attention(model) as maps:
        out = model(x)
    se_scale = maps["0"]["channel"]
    torch.testing.assert_close(model[0](x), x * se_scale)
    y = x * se_scale
    torch.testing.assert_close(out, y * maps["1"]["combined"], rtol=1e-5, atol=1e-6)
    assert maps["1"]["spatial"].shape == (2, 1, 6, 6) and maps["1"]["channel"].shape == (2, 16, 1, 1)
