"""Detector model (BAM inside, trained), backbone weights, and a tiny end-to-end training run."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.models import resnet101
from torchvision.ops.misc import FrozenBatchNorm2d

pytest.importorskip("pycocotools")

from tasks.data.coco import CocoDetection, collate_detection  # noqa: E402
from tasks.detect.model import fasterrcnn_resnet101, build_resnet101_trunk  # noqa: E402
from tasks.networks import load_imagenet_weights  # noqa: E402

TINY = dict(min_size=128, max_size=128, box_batch_size_per_image=8)


def count_calls(modules):
    calls = {name: 0 for name in modules}

    def hook(name):
        def fn(module, args, output):
            calls[name] += 1
        return fn

    handles = [module.register_forward_hook(hook(name)) for name, module in modules.items()]
    return calls, handles


def test_bam_runs_inside_the_c4_detector_loads_imagenet_weights_and_trains(tmp_path, write_tiny_coco):
    torch.manual_seed(0)
    reference = resnet101()
    torch.nn.init.normal_(reference.layer2[0].conv1.weight)
    path = tmp_path / "resnet101.pth"
    torch.save(reference.state_dict(), path)  # a torchvision ImageNet checkpoint, fc included
    detector = fasterrcnn_resnet101(num_classes=8, attention="bam", backbone_weights=path, **TINY)
    body = detector.backbone
    torch.testing.assert_close(body.layer2[0].conv1.weight, reference.layer2[0].conv1.weight)
    torch.testing.assert_close(body.bn1.running_var, reference.bn1.running_var)
    torch.testing.assert_close(detector.roi_heads.box_head.layer4[2].conv3.weight, reference.layer4[2].conv3.weight)
    # torchvision's fine-tuning set-up: frozen BN, conv1 and layer1 fixed; BAM trained
    assert isinstance(body.bn1, FrozenBatchNorm2d) and isinstance(body.layer3[0].bn2, FrozenBatchNorm2d)
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad

    bam_modules = detector.attention
    assert list(bam_modules) == ["layer1", "layer2", "layer3"]
    # registered in the detector: saved, optimised and moved with it
    names = [n for n, _ in detector.named_parameters()]
    assert any(n.startswith("attention.layer3.") for n in names)
    assert any(k.startswith("attention.layer1.") for k in detector.state_dict())
    # BAM on the 256/512/1024-channel stage outputs (paper: ResNet101 +0.36M parameters)
    extra = sum(p.numel() for p in bam_modules.parameters())
    assert 0.35e6 < extra < 0.37e6

    data = CocoDetection(write_tiny_coco(tmp_path, "train"), split="train")
    images, targets = collate_detection([data[0], data[1]])
    calls, handles = count_calls(dict(bam_modules.items()))
    detector.train()
    losses = detector(images, targets)
    sum(losses.values()).backward()
    for handle in handles:
        handle.remove()
    assert calls == {"layer1": 1, "layer2": 1, "layer3": 1}
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    for key in ("layer1", "layer2", "layer3"):  # every BAM is part of the computation
        for name, parameter in bam_modules[key].named_parameters():
            assert parameter.requires_grad and parameter.grad is not None, f"{key}.{name}"
        assert sum(p.grad.abs().sum() for p in bam_modules[key].parameters()) > 0, key
    assert body.conv1.weight.grad is None and body.layer2[0].conv1.weight.grad is not None
    # layer4 is the box head in the C4 layout, run on the pooled RoIs
    assert detector.roi_heads.box_head.layer4[0].conv1.weight.grad is not None


def test_fpn_variant_keeps_bam_and_baseline_has_none():
    detector = fasterrcnn_resnet101(num_classes=5, attention="bam", fpn=True, min_size=64, max_size=64)
    calls, handles = count_calls(dict(detector.attention.items()))
    detector.eval()
    with torch.no_grad():
        out = detector([torch.rand(3, 64, 80)])
    assert calls == {"layer1": 1, "layer2": 1, "layer3": 1} and set(out[0]) == {"boxes", "labels", "scores"}
    baseline = fasterrcnn_resnet101(num_classes=5, fpn=True)
    assert len(baseline.attention) == 0
    assert sum(p.numel() for p in detector.parameters()) - sum(p.numel() for p in baseline.parameters()) \
        == sum(p.numel() for p in detector.attention.parameters())
    with pytest.raises(ValueError, match="attention"):
        fasterrcnn_resnet101(attention="cbam-typo")


def test_classification_checkpoint_with_bam_weights_loads(tmp_path):
    trunk = build_resnet101_trunk("bam")
    # this repository's classifier checkpoint (network.safetensors), values distinct from the trunk's own
    from safetensors.torch import save_file

    saved = {k: (v + 1.0 if v.is_floating_point() else v) for k, v in trunk.state_dict().items()}
    save_file(saved, str(tmp_path / "network.safetensors"))
    report = load_imagenet_weights(trunk, tmp_path, "resnet101")  # a checkpoint folder
    assert report == {"missing": [], "unexpected": []}
    loaded = trunk.state_dict()
    for name, value in saved.items():
        if not name.startswith("fc."):  # the classifier is not part of the detector
            torch.testing.assert_close(loaded[name], value, msg=name)
    assert not torch.equal(loaded["fc.weight"], saved["fc.weight"])

    # another network's weights: most trunk tensors missing, foreign ones present
    foreign = {k: v for k, v in list(saved.items())[:30]} | {"features.0.weight": torch.zeros(3)}
    torch.save(foreign, tmp_path / "other_network.pth")
    with pytest.raises(ValueError, match=r"other_network.pth.*missing.*unexpected"):
        load_imagenet_weights(trunk, tmp_path / "other_network.pth", "resnet101")
    torch.save({"state_dict": "nope"}, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="broken.pth"):
        load_imagenet_weights(trunk, tmp_path / "broken.pth", "resnet101")
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_imagenet_weights(trunk, tmp_path / "nothing.pth", "resnet101")


def test_tiny_training_run_and_evaluation(tmp_path, write_tiny_coco, capsys):
    from tasks.detect import evaluate, train

    root = tmp_path / "data"
    write_tiny_coco(root, "train", seed=1)
    write_tiny_coco(root, "val", seed=2)
    run_dir = tmp_path / "runs" / "tiny"
    argv = ["--data-root", str(root), "--output-dir", str(tmp_path / "runs"), "--run-name", "tiny",
            "--attention", "bam", "--fpn", "--max-steps", "2", "--batch-size", "2", "--min-size", "128",
            "--max-size", "128", "--rois-per-image", "8", "--warmup-steps", "1", "--eval-every", "0",
            "--log-every", "1", "--num-workers", "0", "--num-pictures", "1", "--wandb", "disabled"]
    [summary] = train.main(argv)
    assert summary["steps"] == 2 and summary["primary_metric"] == "mAP" and summary["attention"] == "bam"
    final = summary["final"]
    assert set(final) >= {"mAP", "AP50", "AP75", "AP95", "AP_small", "AP_medium", "AP_large"}
    assert all(-1.0 <= v <= 1.0 for v in final.values())
    assert summary["config"]["lr"] == pytest.approx(0.02 * 2 / 16)  # linear scaling rule
    # COCOeval's per-image matches, kept for paired comparisons, re-accumulate to its mAP.
    import numpy as np

    from tasks.common.per_sample import load_per_sample
    from tasks.report.metrics import WeightedCocoAP

    kept = load_per_sample(run_dir)
    assert kept["image_id"].tolist() == [1, 2, 3] and kept["det_matched"].shape[1] == 10
    assert WeightedCocoAP(kept, np.arange(3))(np.ones((1, 3)))[0] == pytest.approx(max(final["mAP"], 0), abs=1e-6)

    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in history if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2] and "loss_objectness" in train_rows[0]
    assert any(r["split"] == "eval" and "AP50" in r for r in history)
    assert (run_dir / "checkpoints" / "last" / "network.json").is_file()
    assert len(list((run_dir / "detections").glob("step0000002_*.png"))) == 1
    assert "paper Table 5, ResNet101 + BAM" in (run_dir / "summary.md").read_text()

    # the saved model reproduces the final evaluation exactly
    capsys.readouterr()
    result = evaluate.main(["--checkpoint", str(run_dir), "--data-root", str(root), "--json",
                            "--num-workers", "0", "--device", "cpu"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["images"] == 3 and result["metrics"] == pytest.approx(final)

    with pytest.raises(SystemExit):
        train.main(argv[:-2] + ["--wandb", "disabled", "--batch-size", "1"])
    assert "at least 2" in capsys.readouterr().err
