"""Baseline vs BAM end to end: two tiny real runs (W&B offline), then the report and the analyses."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from tasks.analysis import attention_maps, selectivity
from tasks.classify.train import main as classify
from tasks.report.__main__ import main as report
from tasks.report.runs import discover_runs
from conftest import offline_wandb_records, wandb_history, wandb_run_record


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    common = ["--dataset", "digits", "--arch", "resnet20", "--max-steps", "3", "--eval-every", "2",
              "--batch-size", "8", "--max-images", "40", "--output-dir", str(root), "--group", "e2e",
              "--wandb", "offline", "--log-every", "1"]
    # One paired command, as a user runs it: both runs, then their comparison (e2e-comparison/).
    summaries = {s["attention"]: s for s in classify(common + ["--attention", "none", "bam", "--run-name", "e2e"])}
    return root, summaries


def test_report_of_two_real_runs(two_runs, tmp_path, capsys):
    root, summaries = two_runs
    for name in ("e2e-none", "e2e-bam"):  # both runs recorded to W&B offline, and their comparison:
        assert len(list((root / name / "wandb").glob("offline-run-*"))) == 1
    paired = root / "e2e-comparison"
    (logged,) = (paired / "wandb").glob("offline-run-*")
    assert (logged / "files" / "comparison.md").is_file()
    # The report of the folder writes the comparison the paired command wrote: same rows, same files.
    out = tmp_path / "report"
    assert report([str(root), "--group", "e2e", "--output-dir", str(out)]) == 0
    rows = list(csv.DictReader((paired / "comparison.csv").open()))
    again = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["metric"] for r in rows] == ["top1_err", "top5_err"] and rows == again
    pictures = lambda folder: sorted(p.name for p in folder.glob("*.png"))  # noqa: E731
    assert pictures(out) == pictures(paired) == ["curves_classify_digits_resnet20.png", "forest.png"]
    base, bam = summaries["none"], summaries["bam"]
    top1 = rows[0]
    assert top1["network"] == "resnet20" and top1["variant"] == "bam"
    assert float(top1["baseline_mean"]) == pytest.approx(base["final"]["top1_err"])
    assert float(top1["variant_mean"]) == pytest.approx(bam["final"]["top1_err"])
    assert float(top1["delta"]) == pytest.approx(bam["final"]["top1_err"] - base["final"]["top1_err"])
    assert int(top1["variant_params"]) - int(top1["baseline_params"]) == bam["params"] - base["params"] > 0
    assert int(top1["items"]) == 40 and top1["mcnemar_p"] and float(top1["low"]) <= float(top1["high"])
    assert "McNemar" in capsys.readouterr().out
    # the runs the comparison was made of, not the comparison's own W&B run
    assert sorted(r.attention for r in discover_runs([root])) == ["bam", "none"]


def test_the_comparison_is_a_wandb_run_of_the_group_with_its_table_and_pictures(two_runs):
    """W&B tells the comparison from the training runs by its job type; it holds the table, every
    picture and comparison.md of the comparison folder."""
    root, _ = two_runs
    for name, job in (("e2e-none", "classify"), ("e2e-bam", "classify"), ("e2e-comparison", "comparison")):
        run = wandb_run_record(offline_wandb_records(root / name))
        assert (run.run_group, run.job_type, run.display_name) == ("e2e", job, name)
    records = offline_wandb_records(root / "e2e-comparison")
    assert "comparison" in wandb_run_record(records).tags
    logged = {key.rsplit("/", 1)[0]: value for row in wandb_history(records)
              for key, value in row.items() if key.endswith("/_type")}
    assert logged == {"comparison/differences": "table-file", "comparison/forest": "image-file",
                      "comparison/curves_classify_digits_resnet20": "image-file"}
    (table,) = (root / "e2e-comparison").glob("wandb/offline-run-*/files/media/table/comparison/differences_*.json")
    rows = list(csv.reader((root / "e2e-comparison" / "comparison.csv").open()))
    written = json.loads(table.read_text())
    assert written["columns"] == rows[0] and len(written["data"]) == len(rows) - 1 == 2
    metric = rows[0].index("metric")
    assert [row[metric] for row in written["data"]] == [row[metric] for row in rows[1:]] == ["top1_err", "top5_err"]
    assert list((root / "e2e-comparison").glob("wandb/offline-run-*/files/comparison.md"))


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
