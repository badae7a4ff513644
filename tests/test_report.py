"""The comparison report: loading runs from every source, the table's numbers, the files it writes."""

import csv
import io
import json
import statistics

import pytest

from tasks.report.__main__ import main as report_main
from tasks.report.runs import discover_runs
from tasks.report.table import build_rows, csv_table, markdown_table
from tasks.report.wandb_offline import find_offline_runs, read_offline_run


def finish_offline(run) -> None:
    """``run.finish()``, then wait for W&B's writer (another process, which can lag behind finish()
    on a loaded machine) to have put the run's summary into its log file."""
    import time
    from pathlib import Path

    folder = Path(run.dir).parent
    run.finish()
    deadline = time.monotonic() + 60
    while not read_offline_run(folder)["summary"] and time.monotonic() < deadline:
        time.sleep(0.1)


def write_run(folder, *, attention, seed, top1, curve, params, macs, arch="wrn28_8", group="exp", **extra):
    folder.mkdir(parents=True)
    summary = {
        "task": "classify", "name": folder.name, "group": group, "arch": arch, "attention": attention,
        "dataset": "cifar100", "seed": seed, "config": {"placement": "bottleneck"}, "params": params,
        "macs": macs, "final": {"top1_err": top1, "top5_err": top1 / 4}, "best": {"top1_err": top1 - 0.1},
        "primary_metric": "top1_err", "primary_mode": "min", "history_file": "metrics.jsonl", **extra,
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    lines = [json.dumps({"step": step, "split": "eval", "top1_err": value}) for step, value in curve]
    lines.append(json.dumps({"step": 5, "split": "train", "loss": 1.0}))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    for seed, (base, bam) in enumerate([(21.0, 20.0), (22.0, 19.5)]):
        write_run(root / f"base-{seed}", attention="none", seed=seed, top1=base,
                  curve=[(10, 40.0), (20, base)], params=23_400_000, macs=3_000_000_000)
        write_run(root / f"bam-{seed}", attention="bam", seed=seed, top1=bam,
                  curve=[(10, 38.0), (20, bam)], params=23_420_000, macs=3_030_000_000)
    write_run(root / "other-group", attention="bam", seed=0, top1=99.0, curve=[(10, 99.0)],
              params=1, macs=1, group="elsewhere")
    return root


def test_table_means_spread_and_overheads(runs_dir):
    runs = discover_runs([runs_dir], group="exp")
    assert len(runs) == 4
    (row,) = build_rows(runs)
    assert row.variant == "bam" and row.metric == "top1_err" and row.mode == "min"
    assert row.baseline.mean == pytest.approx(21.5) and row.baseline.n == 2
    assert row.baseline.std == pytest.approx(statistics.stdev([21.0, 22.0]))
    assert row.value.mean == pytest.approx(19.75)
    assert row.delta == pytest.approx(-1.75) and row.improved  # lower error is better
    text = markdown_table([row])
    assert "21.50 ± 0.71 (n=2)" in text and "-1.75 ✓" in text
    assert "23.40M → 23.42M (+0.09%)" in text and "3.00G → 3.03G (+1.00%)" in text
    record = next(csv.DictReader(io.StringIO(csv_table([row]))))
    assert float(record["delta"]) == pytest.approx(-1.75) and record["variant_n"] == "2"


def test_ablation_rows_stay_apart_with_the_papers_figures(tmp_path):
    root = tmp_path / "table1a"
    rows = {"base": ("none", "none", 18.5, 18.18), "d1": ("bam", "bam(dilation=1)", 18.0, 17.24),
            "d4": ("bam", "bam", 17.0, 16.71)}
    for row, (attention, variant, top1, paper) in rows.items():
        write_run(root / row, attention=attention, seed=0, top1=top1, curve=[(5, top1)], params=1, macs=1,
                  variant=variant, experiment={"table": "table1a", "row": row, "label": f"row {row}",
                                               "paper": {"top1_err": paper}})
    table = build_rows(discover_runs([root]))
    assert [(r.variant, r.label) for r in table] == [("bam", "row d4"), ("bam(dilation=1)", "row d1")]
    assert [r.delta for r in table] == [pytest.approx(-1.5), pytest.approx(-0.5)]
    assert table[1].paper == (18.18, 17.24)
    text = markdown_table(table)
    assert "paper (baseline → variant)" in text and "18.18 → 17.24" in text and "| row d1 |" in text


def test_best_metrics_and_group_filter(runs_dir):
    (row,) = build_rows(discover_runs([runs_dir], group="exp"), which="best")
    assert row.baseline.mean == pytest.approx(21.4)
    with pytest.raises(FileNotFoundError, match="group 'missing'"):
        discover_runs([runs_dir], group="missing")


def test_cli_writes_markdown_csv_and_curves(runs_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert report_main([str(runs_dir), "--group", "exp", "--output", str(out)]) == 0
    assert "| classify | cifar100 | wrn28_8 |" in capsys.readouterr().out
    assert (out / "report.csv").is_file()
    markdown = (out / "report.md").read_text()
    png = out / "curves_classify_cifar100_wrn28_8.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.name in markdown


def test_cli_reports_missing_folder(tmp_path, capsys):
    assert report_main([str(tmp_path / "nope")]) == 2
    assert "nope does not exist" in capsys.readouterr().err


def test_reads_wandb_offline_runs(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    for attention, value in [("none", 30.0), ("bam", 30.5)]:
        run = wandb.init(project="bam", dir=str(tmp_path), group="sr-test", job_type="sr",
                         config={"task": "sr", "arch": "srresnet", "dataset": "t91",
                                 "attention": attention, "seed": 0,
                                 "primary_metric": "Set5/psnr", "primary_mode": "max"})
        for step, psnr in [(1, value - 1), (2, value)]:
            run.log({"eval/Set5/psnr": psnr}, step=step)
        run.summary["final/Set5/psnr"] = value
        run.summary["params"] = 1_500_000
        finish_offline(run)
    folders = find_offline_runs(tmp_path)
    assert len(folders) == 2
    raw = read_offline_run(folders[0])
    assert raw["group"] == "sr-test" and raw["config"]["arch"] == "srresnet"
    runs = discover_runs([tmp_path])
    (row,) = build_rows(runs)
    assert row.baseline.mean == pytest.approx(30.0) and row.value.mean == pytest.approx(30.5)
    assert sorted(r.curve("Set5/psnr")[1][-1] for r in runs) == [30.0, 30.5]


def test_axis_titles_name_the_metric_and_its_unit():
    from tasks.report.plots import axis_title

    assert axis_title("psnr/Set5") == "PSNR on Set5 (dB)"
    assert axis_title("ssim/Set14") == "SSIM on Set14"
    assert axis_title("top1_err") == "top-1 error (%)"
    assert axis_title("loss") == "loss"


def test_a_run_reached_twice_counts_once(runs_dir):
    runs = discover_runs([runs_dir, runs_dir / "base-0", str(runs_dir) + "/../runs"], group="exp")
    assert len(runs) == 4
    (row,) = build_rows(runs)
    assert row.baseline.n == 2 and row.value.n == 2


def test_a_line_cut_by_a_kill_is_skipped_and_a_bad_file_is_named(runs_dir):
    history = runs_dir / "bam-0" / "metrics.jsonl"
    history.write_text(history.read_text() + '{"step": 30, "split": "ev')
    (run,) = [r for r in discover_runs([runs_dir / "bam-0"])]
    assert run.curve("top1_err") == ([10, 20], [38.0, 20.0])
    history.write_text('{"step": 1, "spl\n' + history.read_text())
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 1"):
        discover_runs([runs_dir / "bam-0"])
    (runs_dir / "bam-1" / "summary.json").write_text("{")
    with pytest.raises(ValueError, match=r"bam-1.summary.json is not valid JSON"):
        discover_runs([runs_dir / "bam-1"])


def test_a_resumed_wandb_offline_run_is_one_run(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    import time

    monkeypatch.setenv("WANDB_MODE", "offline")
    config = {"task": "sr", "arch": "srresnet", "dataset": "t91", "attention": "bam", "seed": 0,
              "primary_metric": "Set5/psnr", "primary_mode": "max"}
    # first attempt: killed after step 3 (its last checkpoint was at step 2); the resume redoes step 3
    for steps, final in (([1, 2, 3], None), ([3, 4], 31.0)):
        run = wandb.init(project="bam", dir=str(tmp_path), id="resumed1", resume="allow", config=config)
        for step in steps:
            run.log({"eval/Set5/psnr": 20.0 + step + (0.5 if final else 0.0)}, step=step)
        if final:
            run.summary["final/Set5/psnr"] = final
        finish_offline(run)
        time.sleep(1.1)  # offline folders are named by the second they started
    assert len(find_offline_runs(tmp_path)) == 2
    (run,) = discover_runs([tmp_path])
    assert run.metric("Set5/psnr") == 31.0
    assert run.curve("Set5/psnr") == ([1, 2, 3, 4], [21.0, 22.0, 23.5, 24.5])


def test_overheads_keep_their_sign_and_variant_names_their_options():
    from tasks.report.plots import variant_name
    from tasks.report.table import _overhead

    assert _overhead((2_000_000, 1_900_000), 1e6, "M") == "2.00M → 1.90M (-5.00%)"
    assert _overhead((2_000_000, 2_100_000), 1e6, "M") == "2.00M → 2.10M (+5.00%)"
    assert variant_name("bam(dilation=1)") == "BAM(dilation=1)" and variant_name("bam-c") == "BAM-C"


def test_interrupted_and_failed_runs_are_not_seeds(runs_dir, capsys):
    write_run(runs_dir / "bam-2", attention="bam", seed=2, top1=60.0, curve=[(10, 60.0)], params=23_420_000,
              macs=3_030_000_000, status="interrupted")
    write_run(runs_dir / "bam-3", attention="bam", seed=3, top1=70.0, curve=[(10, 70.0)], params=23_420_000,
              macs=3_030_000_000, status="failed: non-finite loss")
    write_run(runs_dir / "bam-4", attention="bam", seed=4, top1=19.0, curve=[(10, 39.0), (20, 19.0)],
              params=23_420_000, macs=3_030_000_000, status="completed")
    (row,) = build_rows(discover_runs([runs_dir], group="exp"))
    assert row.value.n == 3 and row.value.mean == pytest.approx((20.0 + 19.5 + 19.0) / 3)
    err = capsys.readouterr().err
    assert "bam-2 (status 'interrupted')" in err and "bam-3 (status 'failed: non-finite loss')" in err
    with pytest.raises(FileNotFoundError, match="1 unfinished left out"):
        discover_runs([runs_dir / "bam-2"])


def test_a_torn_wandb_log_keeps_the_records_before_the_tear(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    import shutil

    monkeypatch.setenv("WANDB_MODE", "offline")
    run = wandb.init(project="bam", dir=str(tmp_path / "whole"), config={"task": "sr"})
    values = [step + 0.123456789 for step in range(40)]
    for step, value in enumerate(values):
        run.log({"eval/psnr": value}, step=step)
    finish_offline(run)
    (folder,) = find_offline_runs(tmp_path / "whole")
    full = read_offline_run(folder)["history"]
    assert [row["eval/psnr"] for row in full] == values
    log = next(folder.glob("run-*.wandb"))
    data = log.read_bytes()
    marker = data.index(b"25.123456789")
    cut_short = data[:len(data) * 2 // 3]  # a write cut off by a kill
    # a record whose bytes were damaged: it still parses (as 27.12...), only its CRC tells
    damaged = data[:marker] + b"27" + data[marker + 2:]
    for name, content in (("cut", cut_short), ("damaged", damaged)):
        torn = tmp_path / name / folder.name
        shutil.copytree(folder, torn)
        (torn / log.name).write_bytes(content)
        history = read_offline_run(torn)["history"]
        assert 0 < len(history) < 40 and history == full[:len(history)], name
    assert len(history) == 25  # read up to the damaged record, none after it
