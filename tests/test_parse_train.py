"""Scene-parsing training and evaluation end to end on a tiny ADE20K-layout folder."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from tasks.common.model_io import load_model
from tasks.parse import evaluate as parse_evaluate
from tasks.parse import train as parse_train
from tasks.parse.evaluate import predict_probabilities
from conftest import PARSE_TINY


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, write_tiny_ade20k):
    root = write_tiny_ade20k(tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("runs")
    [summary] = parse_train.main(["--data-root", str(root), "--output-dir", str(out), "--attention", "bam",
                                "--max-steps", "2", "--eval-every", "2", "--run-name", "tiny", *PARSE_TINY])
    return root, out / "tiny", summary


def test_training_run_writes_everything(trained_run):
    _, run_dir, summary = trained_run
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert summary["primary_metric"] == "miou" and 0.0 <= summary["final"]["miou"] <= 100.0
    assert summary["effective_batch_size"] == 2 and summary["config"]["effective_batch_size"] == 2
    assert summary["config"]["sync_bn"] is False and summary["config"]["attention_sites"] == ["layer1", "layer2",
                                                                                              "layer3"]
    per_class = summary["final"]["per_class_iou"]
    assert len(per_class) == 150 and per_class["sky"] is None  # absent class
    assert summary["best"]["per_class_iou"] == per_class  # one evaluation: best = final
    parts = summary["params_breakdown"]
    assert parts["encoder"] + parts["decoder"] == parts["total"] == summary["params"] and parts["attention"] > 0
    assert summary["macs"] == summary["macs_encoder"] + summary["macs_decoder"] > 0
    assert sorted(p.name for p in (run_dir / "predictions").glob("*.png")) == [
        "step_0000002_ADE_valid_00000000.png", "step_0000002_ADE_valid_00000001.png"]
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["split"] for line in lines] == ["train", "train", "eval"]
    assert lines[1]["lr"] == pytest.approx(0.02 * (1 - 1 / 2) ** 0.9)  # poly schedule after one step
    assert "| 4 | tree |" in (run_dir / "per_class_iou.md").read_text()
    assert (run_dir / "summary.md").is_file() and (run_dir / "checkpoints" / "best" / "network.json").is_file()


def test_evaluate_cli_matches_training_and_numpy(trained_run, capsys):
    root, run_dir, summary = trained_run
    scores = parse_evaluate.main(["--checkpoint", str(run_dir), "--data-root", str(root), "--num-workers", "0"])
    assert scores["miou"] * 100 == pytest.approx(summary["final"]["miou"], abs=1e-9)
    # Independent recomputation: plain forward at each image's size, IoU from NumPy masks.
    from tasks.data.ade20k import ADE20K

    model, _ = load_model(run_dir, task="parse")
    model.eval()
    per_image = []  # each image's (intersection, union) per class
    for item in ADE20K(root, "val", train_transform=False):
        h, w = item["label"].shape
        # padded as the evaluation pads (to multiples of 32): the pyramid pooling sees the padding
        padded = nn.functional.pad(item["image"][None], (0, -w % 32, 0, -h % 32))
        with torch.no_grad():
            pred = model(padded)[0, :, :h, :w].argmax(0).numpy()
        label = item["label"].numpy()
        valid = label != 255
        per_image.append([[np.sum((pred == c) & (label == c) & valid) for c in range(150)],
                          [np.sum(((pred == c) | (label == c)) & valid) for c in range(150)]])
    inter, union = np.array(per_image).sum(axis=0)
    assert scores["miou"] == pytest.approx(np.mean(inter[union > 0] / union[union > 0]), abs=1e-9)
    # The final evaluation's per-image counts, kept for paired comparisons, are these very counts.
    from tasks.common.per_sample import load_per_sample

    kept = load_per_sample(run_dir)
    assert kept["index"].tolist() == list(range(len(per_image)))
    assert kept["intersection"].tolist() == np.array(per_image)[:, 0].tolist()
    assert kept["union"].tolist() == np.array(per_image)[:, 1].tolist()
    capsys.readouterr()
    parse_evaluate.main(["--checkpoint", str(run_dir / "checkpoints" / "last"), "--data-root",
                                       str(root), "--num-workers", "0", "--multi-scale", "--scales", "64",
                                       "--json", "--max-images", "1"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["flip"] is True and printed["images"] == 1 and printed["scales"] == [64]
    assert 0.0 <= printed["miou"] <= 1.0 and len(printed["per_class_iou"]) == 150


def test_each_process_scores_its_own_images_once(trained_run, monkeypatch):
    """Two processes' shares of the per-image counts are disjoint and together the one-process
    result (each share here as the other process would gather it)."""
    import contextlib

    import accelerate.utils
    from tasks.data.ade20k import ADE20K

    class Rank:  # the parts of an Accelerator that the evaluation uses, for process `rank` of 2
        num_processes, device = 2, torch.device("cpu")

        def __init__(self, rank):
            self.process_index, self.is_main_process = rank, rank == 0

        def unwrap_model(self, model):
            return model

        def autocast(self):
            return contextlib.nullcontext()

        def reduce(self, tensor, reduction):
            return tensor

    monkeypatch.setattr(accelerate.utils, "gather_object", lambda rows: rows)  # each share as it is
    root, run_dir, _ = trained_run
    model, _ = load_model(run_dir, task="parse")
    data = ADE20K(root, "val", train_transform=False)
    whole = parse_evaluate.evaluate_segmentation(model, data, num_workers=0, per_image=True, progress=False)
    shares = [parse_evaluate.evaluate_segmentation(model, data, Rank(rank), num_workers=0, per_image=True,
                                                   progress=False)["per_image"] for rank in (0, 1)]
    indices = [share["index"].tolist() for share in shares]
    assert sorted(indices[0] + indices[1]) == list(range(len(data))) and not set(indices[0]) & set(indices[1])
    for share in shares:
        assert share["intersection"].tolist() == whole["per_image"]["intersection"][share["index"]].tolist()
        assert share["labelled"].tolist() == whole["per_image"]["labelled"][share["index"]].tolist()


def test_resume_continues_the_run(trained_run):
    root, run_dir, _ = trained_run
    [summary] = parse_train.main(["--data-root", str(root), "--output-dir", str(run_dir.parent), "--attention", "bam",
                                "--max-steps", "3", "--eval-every", "3", "--run-name", "tiny", "--resume", *PARSE_TINY])
    assert summary["steps"] == 3
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 2, 3, 3]


def test_predict_probabilities_multiscale_and_flip():
    # A per-pixel model commutes with flips and padding: every variant must agree with the plain one.
    model = nn.Conv2d(3, 4, 1)
    image = torch.randn(1, 3, 20, 30)
    plain = predict_probabilities(model, image)
    assert plain.shape == (1, 4, 20, 30) and torch.allclose(plain.sum(1), torch.ones(1, 20, 30))
    assert torch.allclose(predict_probabilities(model, image, flip=True), plain, atol=1e-6)
    assert torch.allclose(predict_probabilities(model, image, scales=(20,), flip=True), plain, atol=1e-6)
    multi = predict_probabilities(model, image, scales=(10, 40), flip=True)
    assert multi.shape == (1, 4, 20, 30) and torch.allclose(multi.sum(1), torch.ones(1, 20, 30))  # a mean
    # A flat image looks the same at every scale: the average over scales is the plain prediction.
    flat = torch.ones(1, 3, 20, 30) * torch.tensor([0.3, -1.0, 2.0])[None, :, None, None]
    assert torch.allclose(predict_probabilities(model, flat, scales=(10, 40), flip=True),
                          predict_probabilities(model, flat), atol=1e-5)


def test_syncbn_only_with_several_processes_and_loss_guards():
    assert not parse_train.uses_sync_bn(1) and not parse_train.uses_sync_bn(2, "cpu")
    assert parse_train.uses_sync_bn(2, "cuda")
    groups = parse_train.parameter_groups(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), 1e-4)
    assert [len(g["params"]) for g in groups] == [1, 3] and groups[1]["weight_decay"] == 0.0
    logits_model = nn.Conv2d(3, 3, 1)
    batch = {"image": torch.randn(2, 3, 4, 4), "label": torch.full((2, 4, 4), 255)}
    loss, extras = parse_train.segmentation_loss(logits_model, batch)
    assert loss.item() == 0.0 and np.isfinite(extras["pixel_acc"])  # nothing labelled: 0, not NaN


def test_cli_errors_are_clear(tmp_path, write_tiny_ade20k, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_train.main(["--data-root", str(tmp_path), "--output-dir", str(tmp_path / "runs"), *PARSE_TINY])
    assert exit_info.value.code == 2
    assert "ADEChallengeData2016/images/{training,validation}" in capsys.readouterr().err
    root = write_tiny_ade20k(tmp_path / "data")
    with pytest.raises(SystemExit):
        parse_train.main(["--data-root", str(root), "--output-dir", str(tmp_path / "runs"), "--attention", "bam",
                         *PARSE_TINY, "--batch-size", "1"])
    assert "--batch-size 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_evaluate.main(["--checkpoint", str(tmp_path / "missing")])
    assert f"model not found: {tmp_path / 'missing'}" in capsys.readouterr().err


def test_folder_dataset_option(tmp_path):
    from PIL import Image

    from tasks.data.ade20k import SegmentationFolder

    for split in ("training", "validation"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "annotations" / split).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / split / "a.png")
        Image.fromarray(np.full((8, 8), 3, np.uint8)).save(tmp_path / "annotations" / split / "a.png")
    args = parse_train.TASK.build_parser().parse_args(["--dataset", "folder", "--data-root", str(tmp_path),
                                                  "--num-classes", "3", "--label-offset", "1"])
    train, val = parse_train.build_datasets(args)
    assert isinstance(train, SegmentationFolder) and train.transform is not None and val.transform is None
    assert val[0]["label"].unique().tolist() == [2]  # raw 3 - offset 1
    args.num_classes = None
    with pytest.raises(ValueError, match="--num-classes"):
        parse_train.build_datasets(args)


def test_prediction_panel_layout_and_overlay():
    from tasks.data.ade20k import colorize
    from tasks.parse.visualize import overlay, prediction_panel

    image = np.full((4, 6, 3), 100, np.uint8)
    target = np.array([[0, 1, 255, 2, 2, 2]] * 4)
    blended = overlay(image, target, alpha=0.5)
    assert (blended[:, 2] == 100).all()  # ignored pixels keep the image
    expected = np.round(0.5 * 100 + 0.5 * colorize(target)[0, 0].astype(float))
    assert blended[0, 0].tolist() == expected.tolist()
    panel = prediction_panel(image, np.zeros((4, 6), np.int64), target, gap=2, captions=False)
    assert panel.shape == (4, 3 * 6 + 2 * 2, 3)
    captioned = prediction_panel(image, np.zeros((4, 6), np.int64), target, gap=2)
    assert captioned.shape == (4 + 14, 3 * 6 + 2 * 2, 3) and np.array_equal(captioned[14:], panel)
    assert (panel[:, 8:14][:, 2] == 100).all()  # prediction hidden where the label is unknown


def test_defaults_are_csails_upernet_recipe():
    """config/ade20k-resnet50-upernet.yaml of CSAILVision: SGD 0.02, momentum 0.9, wd 1e-4, poly 0.9,
    16 images per step (8 GPUs x 2), 30 epochs x 5000 iterations, short sides 300..600, long side <= 1000."""
    args = parse_train.TASK.build_parser().parse_args([])
    assert (args.lr, args.momentum, args.weight_decay, args.poly_power) == (0.02, 0.9, 1e-4, 0.9)
    assert (args.batch_size, args.max_steps) == (16, 30 * 5000)
    assert (args.short_sides, args.max_long_side) == ([300, 375, 450, 525, 600], 1000)
    assert (args.backbone, args.decoder_channels) == ("resnet50", 512)
