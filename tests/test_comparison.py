"""Baseline vs BAM end to end: two tiny real runs (W&B offline), then the report and the analyses."""

import json
import time

import numpy as np
import pytest
from PIL import Image

from tasks.analysis import attention_maps, selectivity
from tasks.classify.train import main as classify
from tasks.report.__main__ import main as report
from tasks.report.runs import discover_runs
from tasks.report.wandb_offline import find_offline_runs, read_offline_run


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    common = ["--dataset", "digits", "--arch", "resnet20", "--max-steps", "3", "--eval-every", "2",
              "--batch-size", "8", "--max-images", "40", "--output-dir", str(root), "--group", "e2e",
              "--wandb", "offline", "--log-every", "1"]
    # One paired command, as a user runs it: both runs, then their comparison (e2e-comparison/).
    summaries = {s["attention"]: s for s in classify(common + ["--attention", "none", "bam", "--run-name", "e2e"])}
    # W&B writes its log from another process, which can lag behind the run's end on a loaded
    # machine: wait until both logs hold the final metrics.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
            len(_training_logs(root)) == 2
            and all("final/top1_err" in read_offline_run(f)["summary"] for f in _training_logs(root))):
        time.sleep(0.1)
    return root, summaries


def _training_logs(root):
    return find_offline_runs(root / "e2e-none") + find_offline_runs(root / "e2e-bam")


def test_report_of_two_real_runs(two_runs, tmp_path, capsys):
    root, summaries = two_runs
    assert len(_training_logs(root)) == 2  # both runs recorded to W&B offline, and their comparison:
    (comparison,) = find_offline_runs(root / "e2e-comparison")
    assert read_offline_run(comparison)["job_type"] == "comparison"
    out = tmp_path / "report"
    assert report([str(root), "--group", "e2e", "--output", str(out)]) == 0
    rows = list(__import__("csv").DictReader((out / "report.csv").open()))
    assert len(rows) == 1
    row = rows[0]
    base, bam = summaries["none"], summaries["bam"]
    assert row["network"] == "resnet20" and row["variant"] == "bam" and row["metric"] == "top1_err"
    assert float(row["baseline_mean"]) == pytest.approx(base["final"]["top1_err"])
    assert float(row["variant_mean"]) == pytest.approx(bam["final"]["top1_err"])
    assert float(row["delta"]) == pytest.approx(bam["final"]["top1_err"] - base["final"]["top1_err"])
    assert int(row["variant_params"]) - int(row["baseline_params"]) == bam["params"] - base["params"] > 0
    assert (out / "curves_classify_digits_resnet20.png").is_file()
    # The paired command already wrote the comparison; the report writes the same numbers.
    paired = list(__import__("csv").DictReader((root / "e2e-comparison" / "comparison.csv").open()))
    again = list(__import__("csv").DictReader((out / "comparison.csv").open()))
    assert [r["metric"] for r in paired] == ["top1_err", "top5_err"] and paired == again
    top1 = paired[0]
    assert int(top1["items"]) == 40 and top1["mcnemar_p"] and float(top1["low"]) <= float(top1["high"])
    assert float(top1["delta"]) == pytest.approx(bam["final"]["top1_err"] - base["final"]["top1_err"])
    assert "McNemar" in capsys.readouterr().out


def test_offline_wandb_folders_give_the_same_table(two_runs):
    root, summaries = two_runs
    assert len(find_offline_runs(root)) == 3
    runs = discover_runs(find_offline_runs(root))  # W&B's files only, not summary.json; not the comparison
    by_attention = {run.attention: run for run in runs}
    assert set(by_attention) == {"none", "bam"}
    for attention, run in by_attention.items():
        assert run.metric("top1_err") == pytest.approx(summaries[attention]["final"]["top1_err"])
        assert run.curve("top1_err")[0] == [2, 3]


def test_selectivity_and_attention_maps_of_the_runs(two_runs, tmp_path, capsys):
    root, _ = two_runs
    out = tmp_path / "selectivity"
    selectivity.main(["--checkpoint", str(root / "e2e-bam"), "--baseline", str(root / "e2e-none"),
                      "--max-images", "60", "--output-dir", str(out)])
    assert sorted(p.name for p in out.glob("*.png")) == ["selectivity_stage1.png", "selectivity_stage2.png"]
    numbers = json.loads((out / "selectivity.json").read_text())
    assert set(numbers) == {"baseline", "BAM"} and set(numbers["BAM"]) == {"layer1", "layer2"}
    assert all(0 <= stage["mean"] <= 1 for stages in numbers.values() for stage in stages.values())
    assert json.loads((root / "e2e-bam" / "summary.json").read_text())["class_selectivity"] == numbers

    image = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(image)
    attention_maps.main(["--checkpoint", str(root / "e2e-bam"), "--baseline", str(root / "e2e-none"),
                         "--images", str(image), "--output-dir", str(tmp_path / "maps")])
    assert (tmp_path / "maps" / "attention_digit.png").is_file()
