"""The comparison folder: loading runs, the one table (means over seeds, references, costs), the
files it writes, the rounding of signed numbers, and a folder of its own for every comparison."""

import csv
import json
import statistics

import numpy as np
import pytest

from tasks.common.per_sample import save_per_sample
from tasks.report.__main__ import main as report_main
from tasks.report.comparison import comparison_markdown, compare_runs, report_paired_runs, write_comparison
from tasks.utils.formatting import count, signed
from tasks.report.plots import axis_title, curve_metrics, variant_name
from tasks.report.runs import _run_from_wandb, discover_runs
from tasks.report.stats import Interval, verdict

SAMPLES = 400


def write_run(folder, *, attention, seed, top1, curve, params, macs, arch="wrn28_8", group="exp", **extra):
    """A finished classification run as the trainer leaves it: summary.json, metrics.jsonl and
    per_sample.npz, whose samples give exactly the ``top1`` error (in %)."""
    folder.mkdir(parents=True)
    wrong = round(top1 * SAMPLES / 100)
    correct1 = np.arange(SAMPLES) >= wrong
    correct5 = np.arange(SAMPLES) >= wrong // 4
    summary = {
        "task": "classify", "name": folder.name, "group": group, "arch": arch, "attention": attention,
        "dataset": "cifar100", "seed": seed, "config": {"placement": "bottleneck"}, "params": params,
        "macs": macs, "wall_time_s": 100.0 if attention == "none" else 120.0, "status": "completed",
        "final": {"top1_err": 100 * (1 - correct1.mean()), "top5_err": 100 * (1 - correct5.mean())},
        "best": {"top1_err": top1 - 0.1}, "primary_metric": "top1_err", "primary_mode": "min",
        "history_file": "metrics.jsonl", **extra,
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    lines = [json.dumps({"step": step, "split": "eval", "top1_err": value}) for step, value in curve]
    lines.append(json.dumps({"step": 5, "split": "train", "loss": 1.0}))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    save_per_sample(folder, {"index": np.arange(SAMPLES), "top1": correct1, "top5": correct5})


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


def top1_row(runs):
    comparisons, _ = compare_runs(runs, resamples=500)
    return next(c for c in comparisons if c.spec.name == "top1_err")


def test_one_table_has_means_spread_per_seed_differences_and_costs(runs_dir, tmp_path):
    runs = discover_runs([runs_dir], group="exp")
    assert len(runs) == 4
    row = top1_row(runs)
    assert row.variant == "bam" and row.spec.mode == "min"
    assert row.baseline.mean == pytest.approx(21.5) and row.baseline.n == 2
    assert row.baseline.std == pytest.approx(statistics.stdev([21.0, 22.0]))
    assert row.value.mean == pytest.approx(19.75) and row.delta == pytest.approx(-1.75)
    assert [r.delta for r in row.per_seed] == [pytest.approx(-1.0), pytest.approx(-2.5)]
    text = write_comparison(runs, tmp_path / "out", "t", resamples=500)
    assert "21.50 ± 0.71 (n=2)" in text and "| -1.75 |" in text and "s0: -1.00, s1: -2.50" in text
    assert "parameters 23.400M → 23.420M (+0.09%), MACs 3.000G → 3.030G (+1.00%), wall time 100 s → 120 s " \
           "(+20.00%), mean per run" in text
    assert text.count("| top-1 error (pts) ↓ |") == 1  # one table: no second one about the same runs
    record = next(csv.DictReader((tmp_path / "out" / "comparison.csv").open()))
    assert float(record["delta"]) == pytest.approx(-1.75) and record["variant_n"] == "2"
    assert (record["baseline_params"], record["variant_params"]) == ("23400000", "23420000")
    assert sorted(json.loads(record["variant_runs"])) == [str(runs_dir / "bam-0"), str(runs_dir / "bam-1")]


def test_ablation_rows_stay_apart_with_the_papers_figures(tmp_path):
    root = tmp_path / "table1a"
    rows = {"base": ("none", "none", 18.5, 18.18), "d1": ("bam", "bam(dilation=1)", 18.0, 17.24),
            "d4": ("bam", "bam", 17.0, 16.71)}
    for row, (attention, variant, top1, paper) in rows.items():
        write_run(root / row, attention=attention, seed=0, top1=top1, curve=[(5, top1)], params=1, macs=1,
                  variant=variant, experiment={"table": "table1a", "row": row, "label": f"row {row}",
                                               "paper": {"top1_err": paper}})
    comparisons, _ = compare_runs(discover_runs([root]), resamples=200)
    top1 = [c for c in comparisons if c.spec.name == "top1_err"]
    assert [(c.variant, c.label) for c in top1] == [("bam", "row d4"), ("bam(dilation=1)", "row d1")]
    assert [c.delta for c in top1] == [pytest.approx(-1.5), pytest.approx(-0.5)]
    assert top1[1].reference == ("paper", 18.18, 17.24)
    text = comparison_markdown(comparisons)
    assert "| reference |" in text and "paper 18.18 → 17.24" in text and "| row d1 |" in text
    top5 = next(c for c in comparisons if c.spec.name == "top5_err")
    assert top5.reference == ("", None, None) and "| – |" in text  # the paper has no figure for it


def test_runs_without_a_reference_get_no_reference_column(runs_dir):
    comparisons, _ = compare_runs(discover_runs([runs_dir], group="exp"), resamples=200)
    assert "reference" not in comparison_markdown(comparisons)


def test_group_filter(runs_dir):
    assert {r.group for r in discover_runs([runs_dir], group="exp")} == {"exp"}
    with pytest.raises(FileNotFoundError, match="group 'missing'"):
        discover_runs([runs_dir], group="missing")


def test_cli_writes_the_comparison_folder(runs_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert report_main([str(runs_dir), "--group", "exp", "--output-dir", str(out), "--resamples", "300"]) == 0
    assert "| cifar100 | wrn28_8 | BAM | top-1 error (pts) ↓ |" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "comparison.md",
                                                     "curves_classify_cifar100_wrn28_8.png", "forest.png"]
    markdown = (out / "comparison.md").read_text()
    png = out / "curves_classify_cifar100_wrn28_8.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({png.name})" in markdown
    # the same folder written again for other runs keeps no picture of the first ones
    (out / "curves_classify_cifar10_resnet.png").write_bytes(png.read_bytes())
    assert report_main([str(runs_dir), "--group", "exp", "--output-dir", str(out), "--resamples", "300"]) == 0
    assert not (out / "curves_classify_cifar10_resnet.png").exists()


def test_cli_reports_missing_folder(tmp_path, capsys):
    assert report_main([str(tmp_path / "nope")]) == 2
    assert "nope does not exist" in capsys.readouterr().err


def test_axis_titles_name_the_metric_and_its_unit():
    assert axis_title("psnr/Set5") == "PSNR on Set5 (dB)"
    assert axis_title("ssim/Set14") == "SSIM on Set14"
    assert axis_title("top1_err") == "top-1 error (%)"
    assert axis_title("loss") == "evaluation loss" and axis_title("AP_small") == "AP_small"


def test_a_run_reached_twice_counts_once(runs_dir):
    runs = discover_runs([runs_dir, runs_dir / "base-0", str(runs_dir) + "/../runs"], group="exp")
    assert len(runs) == 4
    row = top1_row(runs)
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
    with pytest.raises(ValueError, match=r"not valid JSON: .*bam-1.summary.json"):
        discover_runs([runs_dir / "bam-1"])


def test_signed_numbers_follow_one_rule_in_the_table_and_the_verdict():
    assert (signed(0.4242, 2), signed(-3e-5, 2), signed(0.0, 2), signed(-0.0, 2), signed(-0.004, 4)) == \
        ("+0.42", "-0.00003", "+0.00", "+0.00", "-0.0040")
    assert (count(5), count(50_000), count(1_547_011), count(2_227_000_000), count(None)) == \
        ("5", "50,000", "1.547M", "2.227G", "–")
    assert variant_name("bam(dilation=1)") == "BAM(dilation=1)" and variant_name("bam-c") == "BAM-C"
    # A bound just below 0 reads the same in the interval column and in the verdict.
    words = verdict(-0.0017, Interval(-0.0034, -3e-5, 0.95, 1000, 0, "images"), "max", "", "BAM", 2)
    assert words == "BAM worse by 0.002 [-0.003, -0.00003]"


def test_interrupted_and_failed_runs_are_not_seeds(runs_dir, capsys):
    write_run(runs_dir / "bam-2", attention="bam", seed=2, top1=60.0, curve=[(10, 60.0)], params=23_420_000,
              macs=3_030_000_000, status="interrupted")
    write_run(runs_dir / "bam-3", attention="bam", seed=3, top1=70.0, curve=[(10, 70.0)], params=23_420_000,
              macs=3_030_000_000, status="failed: non-finite loss")
    write_run(runs_dir / "bam-4", attention="bam", seed=4, top1=19.0, curve=[(10, 39.0), (20, 19.0)],
              params=23_420_000, macs=3_030_000_000, status="completed")
    row = top1_row(discover_runs([runs_dir], group="exp"))
    assert row.value.n == 3 and row.value.mean == pytest.approx((20.0 + 19.5 + 19.0) / 3)
    err = capsys.readouterr().err
    assert "bam-2 (status 'interrupted')" in err and "bam-3 (status 'failed: non-finite loss')" in err
    with pytest.raises(FileNotFoundError, match="1 unfinished left out"):
        discover_runs([runs_dir / "bam-2"])


def test_every_paired_run_gets_a_comparison_folder_of_its_own(runs_dir, tmp_path, capsys):
    first = [runs_dir / "base-0", runs_dir / "bam-0"]
    second = [runs_dir / "base-1", runs_dir / "bam-1"]
    out = tmp_path / "out"
    assert report_paired_runs(first, out, "exp", "first") == out / "exp-comparison"
    before = (out / "exp-comparison" / "comparison.md").read_text()
    assert report_paired_runs(second, out, "exp", "second") == out / "exp-comparison-2"
    assert (out / "exp-comparison" / "comparison.md").read_text() == before  # the first is kept
    assert "# second" in (out / "exp-comparison-2" / "comparison.md").read_text()
    captured = capsys.readouterr()
    assert "holds the comparison of other runs; writing this one to" in captured.err
    assert f"written to {out / 'exp-comparison-2'}" in captured.out  # says where it went
    # the same runs again (a resumed paired run): their own comparison is rewritten in place
    assert report_paired_runs(second, out, "exp", "second again") == out / "exp-comparison-2"
    assert not (out / "exp-comparison-3").exists()


def test_a_run_fetched_from_the_wandb_api_reads_like_its_folder():
    # what the W&B API gives for a run the trainer logged: flat "final/..." summary keys, history
    # rows of training ("train/...") and evaluation ("eval/...") under "_step"
    run = _run_from_wandb({
        "id": "abc", "name": "sr-bam", "group": "g", "folder": "https://wandb.ai/me/bam/runs/abc",
        "per_sample_file": "",
        "config": {"task": "sr", "arch": "srresnet", "dataset": "T91", "attention": "bam", "seed": 0,
                   "primary_metric": "psnr/Set5", "primary_mode": "max"},
        "summary": {"final/psnr/Set5": 30.5, "best/psnr/Set5": 30.6, "steps": 200, "_runtime": 9.0},
        "history": [{"_step": 100, "train/loss": 0.1}, {"_step": 100, "eval/psnr/Set5": 29.5},
                    {"_step": 200, "eval/psnr/Set5": 30.5, "eval/ssim/Set5": 0.85, "eval/num_images": 5}],
    })
    assert (run.network, run.attention, run.group, run.steps) == (("sr", "T91", "srresnet"), "bam", "g", 200)
    assert run.metric("psnr/Set5") == 30.5
    assert run.curve("psnr/Set5") == ([100, 200], [29.5, 30.5])
    assert curve_metrics([run]) == ["psnr/Set5", "ssim/Set5"]  # what the curves draw: no training loss, no count
