"""UperNet structure, sizes (against closed-form counts), encoder checkpoints and BAM placement."""

import pytest
import torch
import torchvision

from tasks.networks import load_imagenet_weights
from tasks.parse.model import UperNet, parameter_breakdown


def csail_upernet_decoder_params(stage_channels, num_classes, width=512, scales=4):
    """Closed-form parameter count of CSAIL's UPerNet decoder (bias-free convs, BN weight+bias)."""
    conv_bn = lambda cin, cout, k: cin * cout * k * k + 2 * cout  # noqa: E731
    ppm = scales * conv_bn(stage_channels[-1], width, 1) + conv_bn(stage_channels[-1] + scales * width, width, 3)
    fpn = sum(conv_bn(c, width, 1) for c in stage_channels[:-1]) + 3 * conv_bn(width, width, 3)
    fuse = conv_bn(4 * width, width, 3)
    return ppm + fpn + fuse + width * num_classes + num_classes


@pytest.fixture(scope="module")
def resnet50_upernet():
    torch.manual_seed(0)
    return UperNet(num_classes=150, backbone="resnet50").eval()


def test_resnet50_sizes_match_torchvision_and_closed_form(resnet50_upernet):
    counts = parameter_breakdown(resnet50_upernet)
    reference = torchvision.models.resnet50(weights=None)
    assert counts["encoder"] == sum(p.numel() for p in reference.parameters()) - (2048 * 1000 + 1000)
    assert counts["decoder"] == csail_upernet_decoder_params((256, 512, 1024, 2048), 150) == 40_590_486
    assert counts["total"] == counts["encoder"] + counts["decoder"] and counts["attention"] == 0


def test_resnet50_forward_full_resolution(resnet50_upernet):
    with torch.no_grad():
        out = resnet50_upernet(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 150, 64, 64) and torch.isfinite(out).all()


def test_any_input_size_and_batch_one_training():
    model = UperNet(num_classes=5, backbone="resnet18", channels=16)
    out = model(torch.randn(1, 3, 70, 90))  # not a multiple of 32; BN in training mode with one image
    assert out.shape == (1, 5, 70, 90)
    out.mean().backward()
    assert model.encoder.conv1.weight.grad is not None and model.decoder.classifier.weight.grad is not None


def test_bam_changes_the_output_against_the_same_weights_without_it():
    torch.manual_seed(0)
    model = UperNet(num_classes=5, backbone="resnet18", attention="bam", channels=16).eval()
    baseline = UperNet(num_classes=5, backbone="resnet18", channels=16).eval()
    missing, unexpected = baseline.load_state_dict(model.state_dict(), strict=False)  # same base, no BAM
    assert not missing and unexpected and all(".attention." in key for key in unexpected)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        with_bam, without = model(x), baseline(x)
    assert not torch.allclose(with_bam, without, atol=1e-4)  # the BAMs really refine the features
    model.train()
    model(torch.randn(2, 3, 64, 64)).mean().backward()
    # Every weight of the three BAMs learns (two linear layers and four convolutions each).
    weights = [p.grad for p in model.encoder.attention.parameters() if p.dim() > 1]
    assert len(weights) == 3 * 6 and all(g is not None and g.abs().sum() > 0 for g in weights)


def test_decoder_layout():
    model = UperNet(num_classes=7, backbone="resnet18", channels=32)
    head = model.decoder
    assert head.ppm.pool_scales == (1, 2, 3, 6)
    assert head.ppm.bottleneck[0].in_channels == 512 + 4 * 32 and head.ppm.bottleneck[0].kernel_size == (3, 3)
    assert [m[0].in_channels for m in head.lateral] == [64, 128, 256]
    assert head.fuse[0].in_channels == 4 * 32 and head.fuse[0].kernel_size == (3, 3)
    assert (head.classifier.in_channels, head.classifier.out_channels) == (32, 7)
    assert not hasattr(model.encoder, "fc") or isinstance(model.encoder.fc, torch.nn.Identity)


def _random_resnet18_state():
    torch.manual_seed(1)
    net = torchvision.models.resnet18(weights=None)
    state = net.state_dict()
    for value in state.values():  # distinct from a fresh init, cheaply
        value.add_(torch.rand(()) + 0.5) if value.is_floating_point() else None
    return state


@pytest.mark.parametrize("wrap", ["plain", "state_dict_module_prefix", "model_key"])
def test_load_encoder_weights_formats(tmp_path, wrap):
    state = _random_resnet18_state()
    if wrap == "state_dict_module_prefix":
        saved = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    elif wrap == "model_key":
        saved = {"model": state, "optimizer": {}}
    else:
        saved = state
    path = tmp_path / "encoder.pth"
    torch.save(saved, path)
    model = UperNet(num_classes=3, backbone="resnet18", channels=16)
    report = load_imagenet_weights(model.encoder, path, "resnet18")
    assert report == {"missing": [], "unexpected": []}  # fc.* ignored, nothing else left over
    assert torch.equal(model.encoder.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert torch.equal(model.encoder.bn1.running_var, state["bn1.running_var"])


def test_load_encoder_weights_refuses_another_network(tmp_path):
    state = _random_resnet18_state()
    model = UperNet(num_classes=3, backbone="resnet18", channels=16)
    # torchvision's published ResNet weights have no num_batches_tracked: nothing is missing
    without_counts = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(without_counts, tmp_path / "published.pth")
    assert load_imagenet_weights(model.encoder, tmp_path / "published.pth", "resnet18") == \
        {"missing": [], "unexpected": []}
    partial = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    partial["extra.weight"] = torch.zeros(1)
    torch.save(partial, tmp_path / "partial.pt")
    refused = r"partial\.pt.*resnet18.*missing.*layer4\..*1 unexpected.*extra\.weight"
    with pytest.raises(ValueError, match=refused):
        load_imagenet_weights(model.encoder, tmp_path / "partial.pt", "resnet18")
    wrong = dict(state, **{"layer1.0.conv1.weight": torch.zeros(256, 64, 1, 1)})  # a ResNet50 shape
    torch.save(wrong, tmp_path / "r50.pt")
    with pytest.raises(ValueError, match=r"r50\.pt.*1 of another shape.*layer1\.0\.conv1\.weight"):
        load_imagenet_weights(model.encoder, tmp_path / "r50.pt", "resnet18")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_imagenet_weights(model.encoder, tmp_path / "junk.pt", "resnet18")
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_imagenet_weights(model.encoder, tmp_path / "nothere.pt", "resnet18")


def test_bam_on_encoder_bottlenecks_and_bam_classifier_checkpoint(tmp_path):
    from bam import attach_attention

    torch.manual_seed(2)
    classifier = torchvision.models.resnet18(weights=None)
    sites = attach_attention(classifier, "bam", input_size=(3, 224, 224))
    for value in classifier.state_dict().values():
        if value.is_floating_point():
            value.add_(0.25)
    torch.save({"model": classifier.state_dict()}, tmp_path / "bam_resnet18.pt")
    model = UperNet(num_classes=4, backbone="resnet18", attention="bam", channels=8)
    assert model.attention_targets == sites == ["layer1", "layer2", "layer3"]
    counts = parameter_breakdown(model)
    assert counts["attention"] == sum(p.numel() for p in classifier.attention.parameters()) > 0
    assert load_imagenet_weights(model.encoder, tmp_path / "bam_resnet18.pt", "resnet18") == \
        {"missing": [], "unexpected": []}
    loaded, source = model.encoder.attention.state_dict(), classifier.attention.state_dict()
    assert loaded.keys() == source.keys() and all(torch.equal(loaded[key], source[key]) for key in source)
    # The attention runs in the forward pass: zeroing its parameters changes the output.
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        before = model(x)
        for p in model.encoder.attention.parameters():
            p.zero_()
        assert not torch.allclose(before, model(x))


def test_registry_profile_build_and_mac_split():
    from bam import count_macs
    from tasks.networks import build_network, input_size_for, list_networks

    assert "upernet-resnet50" in list_networks("ade20k") and input_size_for("ade20k") == (3, 512, 512)
    with torch.device("meta"):
        profiled = build_network("upernet-resnet50", "ade20k", attention="bam")  # attention on the whole model
        ours = UperNet(num_classes=150, backbone="resnet50", attention="bam")
    assert sorted(profiled.attention.keys()) == ["encoder_layer1", "encoder_layer2", "encoder_layer3"]
    assert parameter_breakdown(profiled) == parameter_breakdown(ours)
    # MAC split at 64x64 against closed forms: torchvision's ResNet18 minus its fc, and the decoder.
    w, k = 16, 5
    with torch.device("meta"):
        model = UperNet(num_classes=k, backbone="resnet18", channels=w)
        reference = torchvision.models.resnet18(weights=None)
    split = model.profile_parts((3, 64, 64))
    assert split["encoder"]["macs"] == count_macs(reference, (3, 64, 64)) - 512 * 1000
    areas = (16 * 16, 8 * 8, 4 * 4, 2 * 2)
    decoder = (4 * 512 * w * areas[3] + (512 + 4 * w) * w * 9 * areas[3]
               + sum(c * w * a for c, a in zip((64, 128, 256), areas))
               + w * w * 9 * sum(areas[:3]) + 4 * w * w * 9 * areas[0] + w * k * areas[0])
    assert split["decoder"]["macs"] == decoder
    assert split["total"]["params"] == split["encoder"]["params"] + split["decoder"]["params"]
