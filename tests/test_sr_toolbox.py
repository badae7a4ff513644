"""The SR toolbox: an exponential moving average of the weights with BatchNorm statistics of its
own (--ema), and the x8 self-ensemble (--self-ensemble)."""

from __future__ import annotations

import argparse
import json

import numpy as np

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tasks.common.checkpoint import read_trainer_state
from tasks.common.cli import add_run_args
from tasks.common.ema import WeightAverage
from tasks.sr import evaluate as sr_evaluate
from tasks.sr import train as sr_train
from tasks.sr.ensemble import DIHEDRAL, SelfEnsemble
from conftest import SR_TINY


def _run(sr_crops, out, *extra):
    argv = [*SR_TINY, "--train-dir", str(sr_crops["train"]), "--sets", str(sr_crops["bench"]),
            "--output-dir", str(out), "--run-name", "run", "--wandb", "disabled", "--num-pictures", "0", *extra]
    return sr_train.main(argv)[0]


# -- weight average -----------------------------------------------------------------------------
def test_an_average_of_identical_weights_evaluates_exactly_like_them(sr_crops, tmp_path):
    """Decay 0: the average is the network after every step, and so are its BatchNorm statistics
    (the batch went through it in training mode, as through the network), so it scores the same
    to the last digit, and the checkpoint's network is the same network."""
    plain = _run(sr_crops, tmp_path / "plain", "--max-steps", "4", "--eval-every", "2")
    averaged = _run(sr_crops, tmp_path / "ema", "--max-steps", "4", "--eval-every", "2", "--ema", "0")
    assert averaged["final"]["psnr/bench"] == plain["final"]["psnr/bench"]
    assert averaged["final"]["ssim/bench"] == plain["final"]["ssim/bench"]
    exported = load_file(str(tmp_path / "ema" / "run" / "checkpoints" / "last" / "network.safetensors"))
    reference = load_file(str(tmp_path / "plain" / "run" / "checkpoints" / "last" / "network.safetensors"))
    assert all(torch.equal(exported[k], reference[k]) for k in reference)  # running statistics included


def test_the_average_is_evaluated_exported_and_resumed_bit_for_bit(sr_crops, tmp_path):
    same = ["--eval-every", "3", "--ema", "0.9", "--lr-schedule", "constant"]  # a rate that does not know the end
    straight = _run(sr_crops, tmp_path / "straight", "--max-steps", "6", *same)
    _run(sr_crops, tmp_path / "cut", "--max-steps", "3", *same)
    resumed = _run(sr_crops, tmp_path / "cut", "--max-steps", "6", *same, "--resume")
    last = lambda out: tmp_path / out / "run" / "checkpoints" / "last"  # noqa: E731
    for name in ("ema.safetensors", "network.safetensors", "model.safetensors"):
        expected, got = load_file(str(last("straight") / name)), load_file(str(last("cut") / name))
        assert all(torch.equal(expected[k], got[k]) for k in expected), name
    assert resumed["final"] == straight["final"]
    # What is evaluated and exported is the average, not the trained network.
    trained = load_file(str(last("straight") / "model.safetensors"))
    exported = load_file(str(last("straight") / "network.safetensors"))
    assert not torch.equal(trained["tail.weight"], exported["tail.weight"])
    assert torch.equal(load_file(str(last("straight") / "ema.safetensors"))["tail.weight"], exported["tail.weight"])
    assert read_trainer_state(last("straight"))["config"]["ema"] == 0.9


def test_the_average_follows_its_own_statistics():
    """BatchNorm's running statistics of the average come from batches through its own weights."""
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    average = WeightAverage(network, decay=0.5)
    with torch.no_grad():
        network[0].weight.mul_(3.0)  # the trained weights move away from the average
    batch = torch.randn(4, 3, 8, 8)
    average.follow_statistics(lambda net: net(batch))
    expected = average.module[0](batch).mean(dim=(0, 2, 3)) * 0.1  # BatchNorm's momentum from zero
    torch.testing.assert_close(average.module[1].running_mean, expected)
    average.update(network)
    torch.testing.assert_close(average.module[0].weight, network[0].weight * (0.5 + 0.5 / 3))
    parser = add_run_args(argparse.ArgumentParser())  # a decay of 1 would never move: refused
    assert parser.parse_args(["--ema", "0.999"]).ema == 0.999
    assert parser.parse_args(["--ema", "none"]).ema is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--ema", "1.0"])


# -- self-ensemble ------------------------------------------------------------------------------
def test_the_eight_transforms_invert_and_are_distinct():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    seen = set()
    for transform, inverse in DIHEDRAL:
        assert torch.equal(inverse(transform(x)), x)
        seen.add(tuple(transform(x[0, 0]).flatten().tolist()))
    assert len(seen) == 8  # the whole dihedral group of the square


def test_an_equivariant_model_gives_its_plain_output():
    nearest = nn.Upsample(scale_factor=4, mode="nearest")  # commutes with flips and quarter turns
    x = torch.rand(1, 3, 6, 9)
    assert torch.equal(SelfEnsemble(nearest)(x), nearest(x))
    lopsided = nn.Conv2d(3, 3, 3, padding=1)  # no symmetry: the ensemble differs
    assert not torch.allclose(SelfEnsemble(lopsided)(x), lopsided(x))


def test_evaluate_prints_the_ensemble_rows(sr_crops, tmp_path, capsys):
    _run(sr_crops, tmp_path, "--max-steps", "2", "--eval-every", "0")
    capsys.readouterr()
    results = sr_evaluate.main(["--checkpoint", str(tmp_path / "run"), "--sets", str(sr_crops["bench"]),
                                "--self-ensemble", "--json", "--device", "cpu"])
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"bench", "bench+x8"} and printed == json.loads(json.dumps(results))
    assert printed["bench+x8"]["psnr"] != printed["bench"]["psnr"]
    with pytest.raises(SystemExit):
        sr_evaluate.main(["--model", "bicubic", "--sets", str(sr_crops["bench"]), "--self-ensemble"])


def test_upscale_writes_the_ensemble(sr_crops, tmp_path):
    from PIL import Image

    from tasks.common.model_io import load_model
    from tasks.data.images import read_rgb
    from tasks.sr import upscale
    from tasks.utils.images import quantize

    _run(sr_crops, tmp_path, "--max-steps", "2", "--eval-every", "0")
    photo = sorted(sr_crops["bench"].glob("*.png"))[0]
    upscale.main(["--checkpoint", str(tmp_path / "run"), "--input", str(photo), "--output-dir",
                  str(tmp_path / "x8"), "--self-ensemble", "--tile", "0", "--device", "cpu"])
    model, _ = load_model(tmp_path / "run")
    lr = torch.from_numpy(read_rgb(photo)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = quantize(SelfEnsemble(model.eval())(lr)[0].clamp(0, 1)).permute(1, 2, 0).numpy()
    written = np.asarray(Image.open(tmp_path / "x8" / photo.name))
    assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1  # float rounding at .5 only


def test_training_scores_the_ensemble_at_the_end(sr_crops, tmp_path):
    summary = _run(sr_crops, tmp_path, "--max-steps", "2", "--eval-every", "1", "--self-ensemble")
    assert {"psnr/bench", "psnr/bench+x8"} <= set(summary["final"])
    assert summary["reference"]["metrics"]["psnr/bench+x8"] == summary["reference"]["metrics"]["psnr/bench"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluations = [row for row in rows if row["split"] == "eval"]
    assert ["psnr/bench+x8" in row for row in evaluations] == [False, True]  # the end only


def test_json_has_no_infinity_for_an_exact_image(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "flat"
    folder.mkdir()
    Image.new("RGB", (32, 32), (90, 120, 30)).save(folder / "flat.png")  # bicubic restores it exactly
    sr_evaluate.main(["--model", "bicubic", "--sets", str(folder), "--json"])
    printed = json.loads(capsys.readouterr().out)  # the standard library's strict parser
    assert printed["flat"]["psnr"] is None and printed["flat"]["images"]["flat"]["psnr"] is None
