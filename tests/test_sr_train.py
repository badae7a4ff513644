"""End to end through the SR command line: train, checkpoints, summary, resume, upscale, errors.

The runs are tiny (SRResNet with 2 blocks of 8 channels, 24x24 HR patches, a few steps) on
crops of real photographs (scikit-image's bundled samples) written as PNG files.
"""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import embedded_sr_images
from tasks.report.runs import discover_runs
from tasks.sr import evaluate as sr_evaluate
from tasks.sr import train as sr_train
from tasks.sr import upscale as sr_upscale
from conftest import SR_TINY, offline_wandb_records, wandb_run_record


def _train(sr_crops, out: Path, *extra: str) -> dict:
    argv = [*SR_TINY, "--train-dir", str(sr_crops["train"]), "--sets", str(sr_crops["bench"]),
            "--output-dir", str(out), "--run-name", "run", *extra]
    [summary] = sr_train.main(argv)
    return summary


@pytest.fixture(scope="module")
def trained(sr_crops, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    _train(sr_crops, out, "--max-steps", "4", "--eval-every", "2", "--wandb", "offline")
    return out / "run"


def test_run_folder_contents(trained, sr_crops):
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["task"] == "sr" and summary["attention"] == "bam" and summary["arch"] == "srresnet"
    assert summary["steps"] == 4 and summary["group"] == "sr-quick-x4"
    from tasks.sr.model import srresnet

    expected = srresnet(num_blocks=2, channels=8, attention="bam", attention_interval=1)
    assert len(expected.attention) == 2
    assert summary["params"] == sum(p.numel() for p in expected.parameters())
    assert summary["macs"] > 0 and "3x6x6" in summary["macs_input"]
    assert summary["primary_metric"] == "psnr/bench"
    assert set(summary["final"]) == {"psnr/bench", "ssim/bench"}
    # The bicubic column is the same number `evaluate --model bicubic` gives on that folder.
    bicubic = sr_evaluate.score_set(sr_evaluate.load_sets([sr_crops["bench"]], 4)["bench"], "bicubic", "basicsr")
    assert summary["reference"]["name"] == "bicubic"
    assert summary["reference"]["metrics"]["psnr/bench"] == pytest.approx(bicubic["psnr"], abs=1e-9)
    markdown = (trained / "summary.md").read_text()
    assert "model vs bicubic" in markdown and "| bench |" in markdown and "basicsr" in markdown

    evals = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals if e["split"] == "eval"] == [2, 4]
    for name in ("last", "best"):
        assert (trained / "checkpoints" / name / "network.json").is_file()
    panels = sorted((trained / "samples").glob("*.png"))
    assert len(panels) == 4  # 2 evaluations x 2 images
    width, height = Image.open(panels[0]).size
    assert width == 3 * 36 + 2 * 4 and height > 36  # SR | bicubic | HR side by side, labelled
    assert list((trained / "wandb").glob("offline-run-*"))


def test_checkpoint_reevaluates_to_the_logged_numbers(trained, sr_crops, capsys):
    """evaluate --checkpoint on the run's last model reproduces the PSNR logged at the last step."""
    summary = json.loads((trained / "summary.json").read_text())
    sr_evaluate.main(["--checkpoint", str(trained / "checkpoints" / "last"), "--sets", str(sr_crops["bench"]),
                      "--json", "--device", "cpu"])
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["bench"]["psnr"] == pytest.approx(summary["final"]["psnr/bench"], abs=1e-9)
    assert scores["bench"]["ssim"] == pytest.approx(summary["final"]["ssim/bench"], abs=1e-9)


def test_resume_reaches_the_uninterrupted_weights(sr_crops, tmp_path):
    # A run stopped by --max-steps 3 stands for a killed one, so the learning rate must not depend
    # on --max-steps as the cosine schedule does (schedulers' own resume: tests/test_trainer.py).
    common = ["--eval-every", "3", "--wandb", "disabled", "--num-pictures", "0", "--lr-schedule", "constant"]
    _train(sr_crops, tmp_path / "a", "--max-steps", "6", *common)
    _train(sr_crops, tmp_path / "b", "--max-steps", "3", *common)
    halfway = load_file(str(tmp_path / "b" / "run" / "checkpoints" / "last" / "model.safetensors"))
    _train(sr_crops, tmp_path / "b", "--max-steps", "6", *common, "--resume")
    a = load_file(str(tmp_path / "a" / "run" / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "run" / "checkpoints" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # ... and the weights did move during the resumed half (so the equality above says something).
    moved = [key for key in b if b[key].is_floating_point() and not torch.equal(b[key], halfway[key])]
    assert len(moved) > len(b) // 2
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 1 and steps[-1] == 6


def test_paired_run_ends_with_the_comparison_of_each_set(sr_crops, write_sr_crops, tmp_path, capsys):
    """``--attention none bam``: two runs, then PSNR and SSIM differences per set with intervals."""
    import csv

    second = write_sr_crops(tmp_path / "second", embedded_sr_images("test")[::-1], 36, 4)
    argv = [*SR_TINY, "--train-dir", str(sr_crops["train"]), "--sets", str(sr_crops["bench"]), str(second),
            "--output-dir", str(tmp_path / "runs"), "--run-name", "pair", "--max-steps", "2", "--eval-every", "0",
            "--num-pictures", "0", "--wandb", "disabled", "--attention-interval", "1", "--attention", "none", "bam"]
    none, bam = sr_train.main(argv)
    assert (none["attention"], bam["attention"]) == ("none", "bam") and bam["params"] > none["params"]
    folder = tmp_path / "runs" / "sr-quick-x4-comparison"
    rows = list(csv.DictReader((folder / "comparison.csv").open()))
    assert [r["metric"] for r in rows] == ["psnr/bench", "ssim/bench", "psnr/second", "ssim/second"]
    for row in rows:
        assert int(row["items"]) == (3 if row["metric"].endswith("bench") else 4)
        assert float(row["low"]) <= float(row["delta"]) <= float(row["high"]) and row["interval_over"] == "images"
        metric = row["metric"]
        assert float(row["delta"]) == pytest.approx(bam["final"][metric] - none["final"][metric])
    printed = capsys.readouterr().out
    assert "PSNR on second (dB)" in printed and "95% percentile bootstrap over images" in printed
    assert (folder / "forest.png").is_file() and "PSNR on bench" in (folder / "comparison.md").read_text()
    assert not (folder / "wandb").exists()  # --wandb disabled: the comparison is not logged either


def test_upscale_folder(trained, sr_crops, tmp_path, capsys):
    out = tmp_path / "sr"
    sr_upscale.main(["--checkpoint", str(trained), "--input", str(sr_crops["bench"]), "--output-dir", str(out),
                     "--device", "cpu"])
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == sorted(f.name for f in sr_crops["bench"].glob("*.png"))
    assert np.asarray(Image.open(files[0])).shape == (36 * 4, 36 * 4, 3)


def test_tiled_upscale_matches_whole_image(trained):
    from tasks.common.model_io import load_model
    from tasks.sr.model import srresnet

    with_bam, _ = load_model(trained)
    plain = srresnet(num_blocks=2, channels=8)  # the trained base weights without the BAMs
    plain.load_state_dict(with_bam.state_dict(), strict=False)
    image = np.random.default_rng(0).integers(0, 256, (29, 23, 3), dtype=np.uint8)
    for model in (plain.eval(), with_bam.eval()):
        whole = sr_upscale.upscale_image(model, image, 4).astype(int)
        context = sr_upscale.profile_network(model, 4).context
        tiled = sr_upscale.upscale_image(model, image, 4, tile=10, context=context).astype(int)
        # Convolutions see the same context in a tile; BAM's channel attention averages over the
        # tile instead of the image, as the upscale docstring says: close, not equal.
        assert np.abs(tiled - whole).max() <= 1
        if model is plain:  # the same result up to float rounding
            assert (tiled != whole).mean() < 1e-3


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        sr_train.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_bad_inputs(sr_crops, write_sr_crops, tmp_path, capsys):
    common = [*SR_TINY, "--sets", str(sr_crops["bench"]), "--output-dir", str(tmp_path), "--max-steps", "1"]
    missing = tmp_path / "nowhere"
    assert str(missing) in _error(capsys, [*common, "--train-dir", str(missing)])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no images" in _error(capsys, [*common, "--train-dir", str(empty)])
    message = _error(capsys, [*common, "--train-dir", str(sr_crops["train"]), "--patch-size", "26"])
    assert "--patch-size 26" in message and "multiple" in message
    assert "attention" in _error(capsys, [*common, "--train-dir", str(sr_crops["train"]), "--attention", "nope"])
    small = write_sr_crops(tmp_path / "small", embedded_sr_images("test"), 16, 1)
    assert "crop0.png" in _error(capsys, [*common, "--train-dir", str(small)])
    broken = tmp_path / "broken"
    shutil.copytree(sr_crops["train"], broken)
    (broken / "crop1.png").write_bytes((broken / "crop1.png").read_bytes()[:60])  # truncated PNG
    assert "crop1.png" in _error(capsys, [*common, "--train-dir", str(broken)])
    message = _error(capsys, [*common, "--train-dir", str(sr_crops["train"]), "--sets", "NoSuchSet"])
    assert "NoSuchSet" in message


def test_presets_set_defaults_and_options_override(monkeypatch):
    # No option: the main job on whatever the machine has, baseline and BAM.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    main_job = sr_train.parse_args([])
    assert (main_job.preset, main_job.attention, main_job.global_residual) == ("quick", ["none", "bam"], True)
    assert (main_job.train_subdir, main_job.sets, main_job.eval_every) == \
        ("sr/train/T91", ["Set5", "Set14", "B100"], 300)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = sr_train.parse_args([])
    assert (gpu.preset, gpu.patch_size, gpu.batch_size, gpu.sets) == ("quick-gpu", 96, 16, ["Set5", "Set14", "B100"])
    # The SRGAN recipe the paper used.
    srgan = sr_train.parse_args(["--preset", "srgan"])
    assert (srgan.patch_size, srgan.batch_size, srgan.lr, srgan.betas, srgan.max_steps) == \
        (96, 16, 1e-4, (0.9, 0.999), 1_000_000)
    assert (srgan.scale, srgan.num_blocks, srgan.channels, srgan.attention) == (4, 16, 64, ["none", "bam"])
    t91 = sr_train.parse_args(["--preset", "t91", "--max-steps", "7", "--attention", "bam", "--betas", "0.5", "0.9"])
    assert (t91.max_steps, t91.attention, t91.betas, t91.patch_size, t91.eval_every) == (7, ["bam"], (0.5, 0.9), 96, 2000)
    assert sr_train.parse_args(["--preset", "quick", "--no-global-residual"]).global_residual is False
    assert srgan.global_residual is False and t91.global_residual is False  # SRGAN's SRResNet
    # The CPU main job trains NHWC in float32 (unless accelerate's config says otherwise); the GPU
    # recipes as before.
    assert main_job.channels_last and main_job.mixed_precision is None
    assert (srgan.channels_last, srgan.mixed_precision) == (False, None)
    fp32 = sr_train.parse_args(["--preset", "quick", "--mixed-precision", "no", "--no-channels-last"])
    assert (fp32.preset, fp32.mixed_precision, fp32.channels_last) == ("quick", "no", False)


def test_help_shows_the_chosen_presets_defaults(capsys):
    for preset, batch in (("quick", 4), ("t91", 16)):
        with pytest.raises(SystemExit):
            sr_train.parse_args(["--preset", preset, "--help"])
        assert f"(default: the recipe's, {batch})" in " ".join(capsys.readouterr().out.split())


def test_missing_default_training_folder_names_it(tmp_path, capsys):
    message = _error(capsys, ["--preset", "t91", "--data-root", str(tmp_path), "--max-steps", "1",
                              "--output-dir", str(tmp_path / "runs")])
    assert str(tmp_path / "sr" / "train" / "T91") in message and "--train-dir" in message


def test_quick_preset_reads_the_shipped_sets_without_a_data_root(monkeypatch):
    """T91, Set5, Set14 and B100 ship in datasets/sr, the default data root: no download, no variable."""
    from tasks.data.root import data_root

    monkeypatch.delenv("BAM_DATA_ROOT", raising=False)
    quick = sr_train.parse_args(["--preset", "quick"])
    root = data_root(quick.data_root)
    assert root.name == "datasets" and (root / "prepare_sr.py").is_file()
    sources, label = sr_train._train_sources(quick, root)
    assert label == "sr/train/T91" and len(list(sources[0].glob("*.png"))) == 91
    assert all((root / "sr" / name).is_dir() for name in quick.sets)


def test_channels_last_trains_the_same_model(sr_crops, tmp_path):
    plain = _train(sr_crops, tmp_path, "--max-steps", "2", "--eval-every", "0", "--wandb", "disabled")
    nhwc = _train(sr_crops, tmp_path / "nhwc", "--max-steps", "2", "--eval-every", "0", "--wandb", "disabled",
                  "--channels-last")
    assert json.loads((tmp_path / "nhwc" / "run" / "config.json").read_text())["channels_last"] is True
    # Same seed, same math, another memory layout: equal up to float summation order.
    assert nhwc["final"]["psnr/bench"] == pytest.approx(plain["final"]["psnr/bench"], abs=1e-3)


def test_paired_run_trains_both_networks_alike_and_compares_them(sr_crops, tmp_path, capsys):
    """--attention none bam: one run each (same seed, data order, steps, evaluation), one group,
    then the per-set comparison with bicubic, the curves and the four-way panels."""
    argv = [*SR_TINY, "--attention", "none", "bam", "--global-residual", "--train-dir", str(sr_crops["train"]),
            "--sets", str(sr_crops["bench"]), "--output-dir", str(tmp_path), "--max-steps", "4", "--eval-every", "2",
            "--wandb", "offline"]
    base, bam = sr_train.main(argv)
    assert (base["attention"], bam["attention"]) == ("none", "bam")
    assert base["group"] == bam["group"] == "sr-quick-x4-gr"
    assert base["config"]["model"]["global_residual"] is True
    for key in ("steps", "seed", "best_step"):
        assert base[key] == bam[key]
    assert bam["params"] > base["params"]
    for summary in (base, bam):  # the same evaluation at the same steps
        rows = [json.loads(line) for line in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if r["split"] == "eval"] == [2, 4]
        assert list((Path(summary["run_dir"]) / "wandb").glob("offline-run-*"))
    comparison = tmp_path / "sr-quick-x4-gr-comparison"
    text = (comparison / "comparison.md").read_text()
    rows = list(csv.DictReader((comparison / "comparison.csv").open()))
    assert [r["metric"] for r in rows] == ["psnr/bench", "ssim/bench"]
    psnr = rows[0]
    assert (psnr["items"], psnr["reference"]) == ("3", "bicubic")
    assert float(psnr["reference_baseline"]) == pytest.approx(base["reference"]["metrics"]["psnr/bench"])
    assert float(psnr["delta"]) == pytest.approx(bam["final"]["psnr/bench"] - base["final"]["psnr/bench"])
    assert "| PSNR on bench (dB) ↑ | 3 | bicubic " in text and "global bicubic residual" in text
    assert "cannot say: whether BAM helps" in text and "after 1,000,000 updates" in text
    gains = [s["final"]["psnr/bench"] - s["reference"]["metrics"]["psnr/bench"] for s in (base, bam)]
    assert ("Not above bicubic" in text) == (min(gains) <= 0)  # never claims more than the numbers
    assert "Mean colour error of the final networks on bench" in text and "BAM does better on " in text
    pictures = sorted(p.relative_to(comparison).as_posix() for p in [*comparison.glob("*.png"),
                                                                       *comparison.glob("samples/*.png")])
    panels = [p for p in pictures if p.startswith("samples/")]
    assert len(pictures) == 5 and len(panels) == 2 and "forest.png" in pictures
    assert {p.split("_")[0] for p in pictures} == {"curves", "per", "forest.png", "samples/sr"}
    assert all(f"]({p})" in text for p in pictures)
    with Image.open(comparison / panels[0]) as panel:
        assert panel.width == 4 * 36 + 3 * 4  # bicubic | SRResNet | SRResNet+BAM | HR, 36 px each
    assert f"written to {comparison}" in capsys.readouterr().out  # the last lines say where it is
    # The comparison is a W&B run of the group too: its table, every picture, comparison.md.
    comparison_run = wandb_run_record(offline_wandb_records(comparison))
    assert (comparison_run.run_group, comparison_run.job_type) == ("sr-quick-x4-gr", "comparison")
    (logged,) = (comparison / "wandb").glob("offline-run-*")
    media = logged / "files" / "media"
    logged_pictures = {p.relative_to(media / "images" / "comparison").as_posix().rsplit("_0_", 1)[0]
                       for p in media.rglob("*.png")}
    assert logged_pictures == {p[:-len(".png")] for p in pictures}
    (table,) = (media / "table" / "comparison").glob("differences_*.table.json")
    assert len(json.loads(table.read_text())["data"]) == len(rows)
    assert (logged / "files" / "comparison.md").is_file()
    # ... and the report of the folder still compares the two training runs only.
    assert sorted(run.attention for run in discover_runs([tmp_path])) == ["bam", "none"]


def test_curve_sets_first_scores_the_other_sets_at_the_end_only(sr_crops, tmp_path):
    summary = _train(sr_crops, tmp_path, "--sets", str(sr_crops["bench"]), str(sr_crops["train"]), "--curve-sets",
                     "first", "--max-steps", "4", "--eval-every", "2", "--wandb", "disabled", "--num-pictures", "0")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r for r in rows if r["split"] == "eval"}
    assert "psnr/bench" in evals[2] and "psnr/train" not in evals[2]  # the curve's set only
    assert {"psnr/bench", "psnr/train"} <= set(evals[4]) and set(summary["final"]) == {
        "psnr/bench", "ssim/bench", "psnr/train", "ssim/train"}


def test_a_task_adds_a_loss_term_by_overriding_its_training_step(sr_crops, tmp_path):
    """Nothing in tasks/common changes: the subclass's step runs in the shared loop and its logs land."""
    from tasks.common.run import main as run_main

    class WithTotalVariation(sr_train.SRTask):
        def training_step(self, args):
            def step(run, batch):
                sr = run.model(batch["lr"]).float()
                pixel = torch.nn.functional.l1_loss(sr, batch["hr"].float())
                smoothness = (sr[..., 1:, :] - sr[..., :-1, :]).abs().mean()
                run.backward(pixel + 0.01 * smoothness)
                return {**run.update(), "tv": smoothness.item()}
            return step

    argv = [*SR_TINY, "--train-dir", str(sr_crops["train"]), "--sets", str(sr_crops["bench"]),
            "--output-dir", str(tmp_path), "--run-name", "run", "--max-steps", "2", "--log-every", "1"]
    run_main(WithTotalVariation(), argv)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["tv"] > 0 for row in logged if row["split"] == "train"] == [True, True]
