"""The per-image evidence of an SR comparison: each test image's PSNR under both models, lined up by
name across runs and seeds, drawn as a picture, and the images where the variant gains and loses
most named in comparison.md."""

import json

import numpy as np
import pytest

from tasks.common.per_sample import save_per_sample
from tasks.report.comparison import _per_image_scores, write_comparison
from tasks.report.runs import discover_runs

SETS = {"Set5": 5, "Set14": 14}
CONFIG = {"arch": "srresnet", "dataset": "T91", "scale": 4, "sets": list(SETS), "protocol": "basicsr"}


def write_sr_run(folder, attention, seed, psnr, order=None):
    """A finished SR run: ``psnr[set]`` per image (named img0, img1...), stored in ``order``."""
    folder.mkdir(parents=True)
    per_sample, final = {}, {}
    for name, values in psnr.items():
        index = np.arange(len(values)) if order is None else order[name]
        per_sample.update({f"{name}/names": [f"img{i}" for i in index], f"{name}/psnr": values[index],
                           f"{name}/ssim": np.full(len(values), 0.8)})
        final.update({f"psnr/{name}": float(values.mean()), f"ssim/{name}": 0.8})
    config = {**CONFIG, "attention": attention, "seed": seed}
    summary = {"task": "sr", "name": folder.name, "group": "g", "arch": "srresnet", "attention": attention,
               "dataset": "T91", "seed": seed, "config": config, "final": final, "primary_metric": "psnr/Set5",
               "primary_mode": "max", "status": "completed"}
    (folder / "summary.json").write_text(json.dumps(summary))
    save_per_sample(folder, per_sample)


@pytest.fixture
def runs(tmp_path):
    """Two seeds of each model. BAM gains 1.0 dB on Set14/img7 and loses 0.8 dB on Set5/img2 (means
    over the seeds), and changes every other image by less; its runs store the images in another order."""
    rng = np.random.default_rng(0)
    shuffled = {name: rng.permutation(count) for name, count in SETS.items()}
    for seed in (0, 1):
        base = {name: rng.normal(29.0, 2.0, count) for name, count in SETS.items()}
        bam = {name: values + rng.uniform(-0.2, 0.3, len(values)) for name, values in base.items()}
        bam["Set14"][7] = base["Set14"][7] + (0.9 if seed == 0 else 1.1)
        bam["Set5"][2] = base["Set5"][2] - (0.7 if seed == 0 else 0.9)
        write_sr_run(tmp_path / f"none-s{seed}", "none", seed, base)
        write_sr_run(tmp_path / f"bam-s{seed}", "bam", seed, bam, order=shuffled)
    return discover_runs([tmp_path])


def test_per_image_scores_are_lined_up_by_name_and_averaged_over_seeds(runs):
    baselines = sorted((r for r in runs if r.attention == "none"), key=lambda r: r.seed)
    variants = sorted((r for r in runs if r.attention == "bam"), key=lambda r: r.seed)
    scores = _per_image_scores(baselines, variants)
    assert list(scores) == ["Set5", "Set14"]
    names, base, bam = scores["Set14"]
    assert len(names) == len(base) == len(bam) == 14  # one point per image
    assert names[7] == "img7" and bam[7] - base[7] == pytest.approx(1.0)
    names, base, bam = scores["Set5"]
    assert names[2] == "img2" and bam[2] - base[2] == pytest.approx(-0.8)
    assert np.all(np.abs(np.delete(bam - base, 2)) < 0.3)


def test_the_comparison_draws_every_image_and_names_the_largest_gains_and_losses(runs, tmp_path):
    out = tmp_path / "out"
    text = write_comparison(runs, out, "per image", resamples=200)
    picture = out / "per_image_sr_T91_srresnet.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({picture.name})" in text
    line = next(line for line in text.splitlines() if line.startswith("BAM does better on "))
    assert " of 19 images (PSNR)" in line
    assert "gains most on Set14/img7 (+1.00 dB)," in line and "loses most on Set5/img2 (-0.80 dB)," in line
