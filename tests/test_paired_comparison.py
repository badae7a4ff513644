"""Paired comparisons on synthetic runs written in the trainer's on-disk format (summary.json +
per_sample.npz): known effects come out "better", identical models "within noise", runs that were
not scored alike never share a row, and the W&B Report is built (not saved) with its group filter."""

import contextlib
import csv
import io
import json

import numpy as np
import pytest

from tasks.common.per_sample import save_per_sample
from tasks.report.__main__ import main as report_main
from tasks.report.comparison import compare_runs, write_comparison
from tasks.report.runs import discover_runs

SR_CONFIG = {"arch": "srresnet", "dataset": "T91", "scale": 4, "patch_size": 96, "sets": ["Set5", "Set14"],
             "protocol": "basicsr", "lr": 1e-4, "model": {"scale": 4, "num_blocks": 16, "channels": 64,
                                                          "attention_interval": 4}}
SETS = {"Set5": 5, "Set14": 14}


def write_run(folder, task, attention, seed, config, final, per_sample, primary, mode, group="g"):
    """A finished run as the trainer leaves it: summary.json and per_sample.npz."""
    folder.mkdir(parents=True)
    config = {**config, "attention": attention, "seed": seed, "group": group, "task": task}
    model = config.get("model")
    if isinstance(model, dict):
        config["model"] = {**model, "attention": attention}
    summary = {"task": task, "name": folder.name, "group": group, "arch": config["arch"], "attention": attention,
               "dataset": config["dataset"], "seed": seed, "config": config, "final": final, "best": final,
               "primary_metric": primary, "primary_mode": mode, "status": "completed",
               "params": 1_000 if attention == "none" else 1_010, "history_file": "metrics.jsonl"}
    (folder / "summary.json").write_text(json.dumps(summary))
    save_per_sample(folder, per_sample)
    return folder


def sr_scores(rng, shift=0.0):
    """Per-image PSNR/SSIM of both sets, every image ``shift`` dB (and a little SSIM) better."""
    per_sample, final = {}, {}
    for name, count in SETS.items():
        psnr = rng.normal(30.0, 2.0, count) + shift
        ssim = np.clip(rng.normal(0.85, 0.03, count) + shift / 100, 0, 1)
        per_sample.update({f"{name}/names": [f"img{i}" for i in range(count)], f"{name}/psnr": psnr,
                           f"{name}/ssim": ssim})
        final.update({f"psnr/{name}": float(psnr.mean()), f"ssim/{name}": float(ssim.mean())})
    return per_sample, final


def write_sr_pair(root, variant_shift, config=SR_CONFIG, seed=0, tag=""):
    """Baseline and BAM runs of one seed; BAM is the baseline plus ``variant_shift`` on every image
    (``None``: BAM is the baseline, image for image)."""
    base, final = sr_scores(np.random.default_rng(seed))
    write_run(root / f"none{tag}-s{seed}", "sr", "none", seed, config, final, base, "psnr/Set5", "max")
    if variant_shift is None:
        variant, vfinal = base, final
    else:
        variant, vfinal = sr_scores(np.random.default_rng(seed), variant_shift)
        gain = np.random.default_rng(seed + 100)  # a different gain per image, all above 0.05 dB
        for name, count in SETS.items():
            variant[f"{name}/psnr"] = base[f"{name}/psnr"] + variant_shift + gain.uniform(0.05, 0.3, count)
            vfinal[f"psnr/{name}"] = float(variant[f"{name}/psnr"].mean())
    write_run(root / f"bam{tag}-s{seed}", "sr", "bam", seed, config, vfinal, variant, "psnr/Set5", "max")


def by_metric(comparisons):
    return {c.spec.name: c for c in comparisons}


def test_sr_better_on_every_image_is_better_and_identical_is_within_noise(tmp_path):
    write_sr_pair(tmp_path / "better", 0.2)
    write_sr_pair(tmp_path / "same", None)
    better, notes = compare_runs(discover_runs([tmp_path / "better"]))
    assert not notes
    assert [c.spec.name for c in better] == ["psnr/Set5", "ssim/Set5", "psnr/Set14", "ssim/Set14"]  # per set
    psnr = by_metric(better)["psnr/Set14"]
    assert psnr.items == 14 and psnr.decision == "better" and psnr.interval.low > 0.2
    assert psnr.verdict.startswith("BAM better by ") and " dB [+" in psnr.verdict
    same, _ = compare_runs(discover_runs([tmp_path / "same"]))
    for comparison in same:
        assert comparison.decision == "within noise" and comparison.delta == 0.0
        assert comparison.interval.low == comparison.interval.high == 0.0
        assert comparison.verdict.startswith("within noise: +0.00")


def classify_run(root, attention, seed, correct1, correct5, config=None, order=None):
    n = len(correct1)
    order = np.arange(n) if order is None else order  # evaluation order may differ; the index pairs
    config = {"arch": "resnet20", "dataset": "cifar100", "recipe": {"lr": 0.1}, **(config or {})}
    final = {"top1_err": 100 * (1 - correct1.mean()), "top5_err": 100 * (1 - correct5.mean())}
    per_sample = {"index": order, "top1": correct1[order], "top5": correct5[order]}
    return write_run(root / f"{attention}-s{seed}", "classify", attention, seed, config, final, per_sample,
                     "top1_err", "min")


def test_classification_gets_mcnemar_and_an_interval_of_the_error_difference(tmp_path):
    from scipy.stats import binomtest

    rng = np.random.default_rng(0)
    base1 = rng.random(600) < 0.7
    base5 = base1 | (rng.random(600) < 0.6)
    fixed = ~base1 & (rng.random(600) < 0.3)  # BAM gets right what the baseline does, and these
    classify_run(tmp_path / "better", "none", 0, base1, base5)
    classify_run(tmp_path / "better", "bam", 0, base1 | fixed, base5 | fixed, order=rng.permutation(600))
    classify_run(tmp_path / "same", "none", 0, base1, base5)
    classify_run(tmp_path / "same", "bam", 0, base1, base5)

    top1 = by_metric(compare_runs(discover_runs([tmp_path / "better"]))[0])["top1_err"]
    assert top1.delta == pytest.approx(-100 * fixed.mean()) and top1.decision == "better"
    assert top1.interval.high < 0 and top1.spec.unit == "pts"
    assert (top1.mcnemar.baseline_only, top1.mcnemar.variant_only) == (0, int(fixed.sum()))
    assert top1.mcnemar.p_value == pytest.approx(binomtest(int(fixed.sum()), int(fixed.sum()), 0.5).pvalue)
    for comparison in compare_runs(discover_runs([tmp_path / "same"]))[0]:
        assert comparison.decision == "within noise" and comparison.mcnemar.p_value == 1.0


def test_several_seeds_give_mean_std_per_model_per_seed_differences_and_a_two_level_interval(tmp_path):
    rng = np.random.default_rng(1)
    for seed in range(3):
        base1 = rng.random(400) < 0.6 + 0.02 * seed
        classify_run(tmp_path, "none", seed, base1, base1 | (rng.random(400) < 0.5))
        better = base1 | (~base1 & (rng.random(400) < 0.25))
        classify_run(tmp_path, "bam", seed, better, better | (rng.random(400) < 0.5))
    text = write_comparison(discover_runs([tmp_path]), tmp_path / "out", "three seeds")
    top1 = by_metric(compare_runs(discover_runs([tmp_path]))[0])["top1_err"]
    assert top1.baseline.n == top1.value.n == 3 and top1.baseline.std > 0
    assert [r.seed for r in top1.per_seed] == [0, 1, 2] and all(r.delta < 0 for r in top1.per_seed)
    assert top1.delta == pytest.approx(np.mean([r.delta for r in top1.per_seed]))
    assert top1.interval.levels == "seeds × images" and top1.mcnemar is None
    assert all(r.p_value is not None for r in top1.per_seed)  # McNemar per seed
    assert "± " in text and "(n=3)" in text and "s0: -" in text and "seeds × images" in text
    assert (tmp_path / "out" / "forest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def parse_counts(rng, images=12, classes=5, quality=0.5):
    union = rng.integers(50, 500, (images, classes))
    union[:, -1] = 0  # a class nobody has: left out of the mean
    intersection = np.floor(union * quality).astype(np.int64)
    return {"index": np.arange(images), "intersection": intersection, "union": union,
            "labelled": union.sum(axis=1)}


def test_parsing_pooled_miou_better_and_within_noise(tmp_path):
    config = {"arch": "upernet-resnet50", "dataset": "ade20k", "eval_images": 12}
    base = parse_counts(np.random.default_rng(0))
    better = {**base, "intersection": np.floor(base["union"] * 0.7).astype(np.int64)}
    pooled = lambda ps: 100 * np.mean(ps["intersection"].sum(0)[:-1] / ps["union"].sum(0)[:-1])  # noqa: E731
    for name, variant in (("better", better), ("same", base)):
        write_run(tmp_path / name / "none", "parse", "none", 0, config, {"miou": pooled(base)}, base, "miou", "max")
        write_run(tmp_path / name / "bam", "parse", "bam", 0, config, {"miou": pooled(variant)}, variant, "miou", "max")
    miou = by_metric(compare_runs(discover_runs([tmp_path / "better"]))[0])["miou"]
    assert miou.baseline.mean == pytest.approx(pooled(base)) and miou.decision == "better"
    assert miou.delta == pytest.approx(pooled(better) - pooled(base))
    assert {c.decision for c in compare_runs(discover_runs([tmp_path / "same"]))[0]} == {"within noise"}


def synthetic_coco(rng, images=30, categories=3):
    from pycocotools.coco import COCO

    records, annotations = [], []
    for image_id in range(1, images + 1):
        records.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 200, "height": 200})
        for _ in range(int(rng.integers(1, 4))):
            x, y, w, h = (*rng.uniform(0, 100, 2), *rng.uniform(10, 90, 2))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "area": w * h, "bbox": [x, y, w, h],
                                "category_id": int(rng.integers(1, categories + 1)), "iscrowd": int(rng.random() < 0.1)})
    coco = COCO()
    coco.dataset = {"images": records, "annotations": annotations,
                    "categories": [{"id": c, "name": str(c)} for c in range(1, categories + 1)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def detections(coco, rng, jitter):
    """Each ground truth found with boxes off by ``jitter`` of their size, plus a false positive
    per image; 0 gives the ground truth itself (with a worse-scored false positive)."""
    results = []
    for ann in coco.dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        noise = rng.normal(0, jitter, 4) * [w, h, w, h]
        results.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "score": rng.uniform(0.5, 1),
                        "bbox": [x + noise[0], y + noise[1], w + noise[2], h + noise[3]]})
    for image_id in coco.getImgIds():
        results.append({"image_id": image_id, "category_id": 1, "bbox": [150, 150, 40, 40],
                        "score": rng.uniform(0.6, 0.9) if jitter else 0.01})
    return results


def test_detection_ap_re_accumulated_per_image_matches_cocoeval_and_compares(tmp_path):
    from tasks.detect.coco_eval import coco_metrics, per_image_matches, run_cocoeval
    from tasks.report.metrics import WeightedCocoAP

    rng = np.random.default_rng(0)
    coco = synthetic_coco(rng)
    found = {"none": detections(coco, rng, 0.12), "bam": detections(coco, rng, 0.0)}
    config = {"arch": "fasterrcnn-resnet101", "dataset": "coco", "layout": "c4", "eval_images": 30}
    for attention, results in found.items():
        evaluator = run_cocoeval(coco, results, coco.getImgIds())
        metrics, matches = coco_metrics(evaluator), per_image_matches(evaluator)
        ones = np.ones((1, 30))
        for key, thresholds in (("mAP", slice(None)), ("AP50", [0]), ("AP75", [5])):  # COCOeval's own numbers
            assert WeightedCocoAP(matches, np.arange(30), thresholds)(ones)[0] == pytest.approx(metrics[key], abs=1e-6)
        keep = np.arange(30) % 3 != 0  # weights 0/1: the AP of COCOeval run on the kept images
        kept = [i for i, k in zip(coco.getImgIds(), keep) if k]
        subset = coco_metrics(run_cocoeval(coco, [r for r in results if r["image_id"] in kept], kept))
        assert WeightedCocoAP(matches, np.arange(30))(keep[None].astype(float))[0] == pytest.approx(subset["mAP"], abs=1e-6)
        for folder in ("better", "same"):
            if folder == "same" and attention == "bam":
                matches, metrics = same_as_baseline
            write_run(tmp_path / folder / attention, "detect", attention, 0, config, metrics, matches, "mAP", "max")
        same_as_baseline = (matches, metrics)
    comparisons = by_metric(compare_runs(discover_runs([tmp_path / "better"]), resamples=300)[0])
    assert set(comparisons) == {"mAP", "AP50", "AP75"}
    mAP = comparisons["mAP"]
    assert mAP.decision == "better" and mAP.spec.unit == "AP" and mAP.interval.resamples == 300
    assert mAP.baseline.mean == pytest.approx(100 * run_cocoeval(coco, found["none"]).stats[0], abs=1e-4)
    same = compare_runs(discover_runs([tmp_path / "same"]), resamples=200)[0]
    assert {c.decision for c in same} == {"within noise"}


def test_runs_scored_differently_never_share_a_row(tmp_path):
    # Two SR settings under one network (another model option), each with its own baseline...
    write_sr_pair(tmp_path, 0.2, {**SR_CONFIG, "model": {**SR_CONFIG["model"], "global_residual": True}}, tag="-gr")
    write_sr_pair(tmp_path, None, {**SR_CONFIG, "model": {**SR_CONFIG["model"], "global_residual": False}})
    # ... a BAM run scored under another protocol, and one on other sets, without baselines.
    for change in ({"protocol": "y-only"}, {"sets": ["Set5"]}, {"scale": 2}):
        _, final = sr_scores(np.random.default_rng(5))
        per_sample, _ = sr_scores(np.random.default_rng(5))
        name = "-".join(change)
        write_run(tmp_path / f"bam-{name}", "sr", "bam", 0, {**SR_CONFIG, **change}, final, per_sample,
                  "psnr/Set5", "max")
    runs = discover_runs([tmp_path])
    comparisons, notes = compare_runs(runs)
    assert len(comparisons) == 8  # 4 metrics x the two settings that have both models
    settings = {c.setting for c in comparisons}
    with_gr = "model.global_residual=true, protocol=\"basicsr\", scale=4, sets=[\"Set5\", \"Set14\"]"
    without = "model.global_residual=false, protocol=\"basicsr\", scale=4, sets=[\"Set5\", \"Set14\"]"
    assert settings == {with_gr, without}
    # each row's numbers come from its own runs
    decisions = {(c.setting, c.spec.name): c for c in comparisons}
    assert decisions[(with_gr, "psnr/Set5")].decision == "better"
    assert decisions[(without, "psnr/Set5")].decision == "within noise"
    assert decisions[(without, "psnr/Set5")].delta == 0.0
    # the three BAM runs without a baseline scored alike: named, with their numbers, never compared
    unpaired = [n for n in notes if "no baseline run" in n]
    assert len(unpaired) == 3 and all("psnr/Set5: BAM " in n for n in unpaired)
    assert {next(part for part in ("y-only", "scale=2", "sets=[\"Set5\"]") if part in n) for n in unpaired} == {
        "y-only", "scale=2", "sets=[\"Set5\"]"}


def test_report_cli_prints_verdicts_and_writes_the_forest_plot(tmp_path, capsys):
    write_sr_pair(tmp_path / "runs", 0.2)
    out = tmp_path / "report"
    assert report_main([str(tmp_path / "runs"), "--group", "g", "--output-dir", str(out), "--resamples", "2000"]) == 0
    printed = capsys.readouterr().out
    assert "BAM better by" in printed and "2,000 resamples, seed 2018" in printed
    assert (out / "forest.png").is_file() and "](forest.png)" in (out / "comparison.md").read_text()
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["metric"] for r in rows] == ["psnr/Set5", "ssim/Set5", "psnr/Set14", "ssim/Set14"]
    assert all(float(r["low"]) <= float(r["delta"]) <= float(r["high"]) for r in rows)


@pytest.mark.parametrize("group", ["sr-t91-x4", "it's \"quoted\""])
def test_wandb_report_is_built_offline_with_the_table_and_a_filter_that_selects_the_group(group):
    pytest.importorskip("wandb_workspaces")
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    from tasks.report.publish import build_wandb_report

    table = "| T91 | srresnet | BAM | PSNR on Set5 (dB) ↑ | ... | BAM better by 0.42 dB [+0.18, +0.66] |"
    comparison = f"# title\n\n{table}\n\n![differences with their intervals](forest.png)\n"
    report = build_wandb_report("me/bam", group, comparison, ["psnr/Set5"], "title")
    (markdown,) = [b.text for b in report.blocks if isinstance(b, wr.MarkdownBlock)]
    assert table in markdown and "forest.png" not in markdown  # a local picture W&B does not have
    (grid,) = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    assert [panel.y for panel in grid.panels] == [["eval/psnr/Set5"]]
    (runset,) = grid.runsets
    # The filter string, converted the way the library converts it before saving:
    converted = expr.filters_tree_to_v2(expr.expr_to_filters(runset.filters))
    assert converted["filters"] == [{"key": {"section": "run", "name": "group"}, "op": "=", "value": group,
                                     "disabled": False}]
    assert build_wandb_report("me/bam", None, "", [], "t").blocks[-1].runsets[0].filters == ""
