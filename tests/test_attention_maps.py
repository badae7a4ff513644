"""Attention-map panels from a saved checkpoint, through the command a user runs."""

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.analysis.attention_maps import main, record_features
from tasks.classify.train import network_from_config
from tasks.common.model_io import ModelDescription, save_model
from tasks.networks import build_network


@pytest.fixture
def checkpoints(tmp_path):
    extra = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "image_size": 64}
    paths = {}
    for attention in ("bam", "none"):
        torch.manual_seed(0)
        kwargs = {"arch": "resnet18", "dataset": "imagenet", "attention": attention, "placement": None,
                  "num_classes": 1000}
        description = ModelDescription("tasks.classify.train:network_from_config", kwargs, "classify", extra)
        paths[attention] = save_model(tmp_path / attention, network_from_config(**kwargs), description)
    return paths


def test_panels_for_a_checkpoint_and_its_baseline(tmp_path, checkpoints, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(images / "gray.jpg")
    out = tmp_path / "maps"
    main(["--checkpoint", str(checkpoints["bam"]), "--baseline", str(checkpoints["none"]),
          "--images", str(images), "--output-dir", str(out)])
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == ["attention_a.png", "attention_gray.png"]
    with Image.open(out / "attention_a.png") as panel:
        assert panel.width > 500 and panel.height > 500  # 4 rows x 4 columns of readable plots
    printed = capsys.readouterr().err  # the inputs were not the network's 64x64: it says so
    assert f"{images / 'a.png'} is 70x50: resized (short side 64) and center-cropped to 64x64" in printed


def test_refuses_a_network_without_attention(tmp_path, checkpoints, capsys):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    with pytest.raises(SystemExit) as stop:
        main(["--checkpoint", str(checkpoints["none"]), "--images", str(image)])
    assert stop.value.code == 2
    assert "no attention modules" in capsys.readouterr().err


def test_recorded_features_are_the_refined_ones():
    torch.manual_seed(0)
    model = build_network("resnet18", attention="bam").eval()
    x = torch.randn(1, 3, 64, 64)
    with record_features(model, ["layer1"]) as features:
        model(x)
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        body = model.layer1.forward(stem)  # forward() skips the hooks: the features before BAM
        refined = model.attention["layer1"](body)
    torch.testing.assert_close(features["layer1"][0], refined[0])
    assert not torch.allclose(features["layer1"][0], body[0])


def test_channel_gates_of_bam_and_cbam_and_a_clear_error_for_se(tmp_path):
    from bam import capture_attention
    from tasks.analysis.attention_maps import _panel_maps, attention_panels

    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    for attention in ("bam", "cbam"):
        model = build_network("resnet18", attention=attention, placement="bottleneck").eval()
        with torch.no_grad(), capture_attention(model) as maps:
            model(x)
        panel = _panel_maps(model, "layer1", maps["layer1"])
        # BAM's capture holds the raw Mc, CBAM's the gate itself: the panel shows the gate both times
        expected = torch.sigmoid(maps["layer1"]["channel"][0]) if attention == "bam" else maps["layer1"]["channel"][0]
        torch.testing.assert_close(panel["channel_gate"], expected)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    se = build_network("resnet18", attention="se").eval()
    with pytest.raises(ValueError, match="no spatial attention map"):
        attention_panels(se, [image], tmp_path, (0.5,) * 3, (0.25,) * 3, 32)


def test_many_modules_are_shown_one_per_resolution():
    from tasks.analysis.attention_maps import last_per_resolution

    def maps(size):
        return {"combined": torch.zeros(4, size, size)}

    attention = {"layer1.0": maps(8), "layer1.1": maps(8), "layer2.0": maps(4), "layer2.1": maps(4), "layer3.0": maps(2)}
    assert list(last_per_resolution(attention)) == ["layer1.1", "layer2.1", "layer3.0"]
