"""The statistics of a paired comparison against SciPy: McNemar, bootstrap intervals, verdicts."""

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tasks.report.metrics import _pooled_miou, align
from tasks.report.stats import (RESAMPLING_SEED, Interval, bootstrap_difference, decide, mcnemar_exact,
                                resample_weights, verdict, weighted_mean)


def paired_scores(n=60, effect=0.15, seed=0):
    """Per-image scores of two models: shared image difficulty plus a small per-image effect."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(30.0, 2.0, n)
    baseline = difficulty + rng.normal(0.0, 0.3, n)
    return baseline, baseline + effect + rng.normal(0.0, 0.4, n)


@pytest.mark.parametrize("baseline_only, variant_only", [(0, 0), (3, 3), (0, 7), (12, 4), (40, 61), (500, 560)])
def test_mcnemar_p_is_the_binomial_test_on_the_discordant_pairs(baseline_only, variant_only):
    both, neither = 200, 50
    baseline = np.array([1] * baseline_only + [0] * variant_only + [1] * both + [0] * neither, dtype=bool)
    variant = np.array([0] * baseline_only + [1] * variant_only + [1] * both + [0] * neither, dtype=bool)
    order = np.random.default_rng(1).permutation(len(baseline))  # the pairing, not the order, matters
    result = mcnemar_exact(baseline[order], variant[order])
    assert (result.baseline_only, result.variant_only) == (baseline_only, variant_only)
    # The textbook exact test: twice the binomial(n, 1/2) tail at the smaller discordant count, at most 1
    discordant = baseline_only + variant_only
    tail = sum(Fraction(math.comb(discordant, k), 2**discordant) for k in range(min(baseline_only, variant_only) + 1))
    assert result.p_value == pytest.approx(float(min(1, 2 * tail)), rel=1e-9, abs=1e-15)


def test_paired_bootstrap_of_a_mean_difference_agrees_with_scipy():
    baseline, variant = paired_scores()
    n = len(baseline)
    delta, interval = bootstrap_difference([weighted_mean(baseline)], [weighted_mean(variant)], n)
    reference = scipy_stats.bootstrap((baseline, variant), lambda b, v, axis: v.mean(axis) - b.mean(axis),
                                      paired=True, vectorized=True, method="percentile", n_resamples=10_000,
                                      confidence_level=0.95, random_state=np.random.default_rng(7))
    assert delta == pytest.approx(variant.mean() - baseline.mean())
    low, high = reference.confidence_interval
    # Two independent sets of 10,000 resamples: the bounds agree to a few percent of the width.
    assert interval.low == pytest.approx(low, abs=0.04 * (high - low))
    assert interval.high == pytest.approx(high, abs=0.04 * (high - low))
    assert interval.levels == "images" and interval.resamples == 10_000 and interval.seed == RESAMPLING_SEED


def test_paired_bootstrap_of_a_pooled_ratio_agrees_with_scipy():
    # mIoU pooled over the drawn images is not a mean of per-image values: scipy resamples the
    # image indices and recomputes it on each draw.
    rng = np.random.default_rng(3)
    images, classes = 40, 6
    union = rng.integers(0, 400, (images, classes))
    base_inter = (union * rng.uniform(0.3, 0.7, (images, classes))).astype(int)
    var_inter = np.minimum(union, (base_inter * rng.uniform(0.9, 1.25, (images, classes))).astype(int))
    base = {"intersection": base_inter, "union": union}
    var = {"intersection": var_inter, "union": union}
    everyone = np.arange(images)

    def miou(data, idx):
        inter, uni = data["intersection"][idx].sum(0), data["union"][idx].sum(0)
        return 100 * np.mean(inter[uni > 0] / uni[uni > 0])

    reference = scipy_stats.bootstrap((everyone,), lambda idx: miou(var, idx) - miou(base, idx), vectorized=False,
                                      method="percentile", n_resamples=3000, random_state=np.random.default_rng(2))
    delta, interval = bootstrap_difference([_pooled_miou(base, everyone)], [_pooled_miou(var, everyone)], images,
                                           resamples=3000)
    assert delta == pytest.approx(miou(var, everyone) - miou(base, everyone))
    low, high = reference.confidence_interval
    assert interval.low == pytest.approx(low, abs=0.08 * (high - low))
    assert interval.high == pytest.approx(high, abs=0.08 * (high - low))


def test_a_fixed_resampling_seed_gives_identical_intervals():
    baseline, variant = paired_scores()
    run = lambda seed: bootstrap_difference([weighted_mean(baseline)], [weighted_mean(variant)], len(baseline),  # noqa: E731
                                            resamples=2000, seed=seed)[1]
    assert run(RESAMPLING_SEED) == run(RESAMPLING_SEED)
    assert run(RESAMPLING_SEED) != run(RESAMPLING_SEED + 1)


def test_resample_weights_draw_n_items_with_replacement():
    weights = resample_weights(np.random.default_rng(0), 7, 5000)
    assert weights.shape == (5000, 7) and (weights.sum(axis=1) == 7).all()
    assert weights.mean(axis=0) == pytest.approx(np.ones(7), abs=0.05)  # each item drawn once on average
    assert (weights == 0).mean() == pytest.approx((6 / 7) ** 7, abs=0.01)  # left out of a draw


def test_seeds_widen_the_interval_and_pair_when_they_match():
    baseline, variant = paired_scores(n=200, effect=0.3)
    offsets = [-0.4, 0.0, 0.5]  # training noise: each seed shifts both models by its own amount
    bases = [weighted_mean(baseline + o) for o in offsets]
    seeded = [weighted_mean(variant + o + d) for o, d in zip(offsets, [0.2, -0.25, 0.05])]
    _, images_only = bootstrap_difference([weighted_mean(baseline)], [weighted_mean(variant)], 200, resamples=3000)
    delta, paired = bootstrap_difference(bases, seeded, 200, pair_seeds=True, resamples=3000)
    _, unpaired = bootstrap_difference(bases, seeded, 200, pair_seeds=False, resamples=3000)
    assert delta == pytest.approx(np.mean(variant) - np.mean(baseline) + 0.0)
    assert paired.levels == unpaired.levels == "seeds × images"
    width = lambda i: i.high - i.low  # noqa: E731
    # The per-seed differences vary: counting the seeds widens the interval; resampling the seeds
    # of each model apart also counts their shared offsets, which pairing cancels.
    assert width(paired) > 1.3 * width(images_only)
    assert width(unpaired) > 1.5 * width(paired)
    with pytest.raises(ValueError, match="as many"):
        bootstrap_difference(bases, seeded[:2], 200)


def interval(low, high):
    return Interval(low, high, 0.95, 10_000, RESAMPLING_SEED, "images")


def test_verdicts_cannot_overclaim():
    assert verdict(0.42, interval(0.18, 0.66), "max", "dB", "BAM") == "BAM better by 0.42 dB [+0.18, +0.66]"
    assert verdict(0.05, interval(-0.12, 0.21), "max", "dB", "BAM") == "within noise: +0.05 dB [-0.12, +0.21]"
    assert verdict(-0.3, interval(-0.5, -0.1), "max", "dB", "BAM") == "BAM worse by 0.30 dB [-0.50, -0.10]"
    # an error rate: lower is better
    assert verdict(-1.2, interval(-1.6, -0.8), "min", "pts", "BAM") == "BAM better by 1.20 pts [-1.60, -0.80]"
    assert decide(interval(0.4, 0.9), "min") == "worse"
    # an interval touching 0, two identical models, or a test that does not reject: within noise
    assert decide(interval(0.0, 0.3), "max") == "within noise"
    assert verdict(0.0, interval(0.0, 0.0), "max", "", "BAM", 4) == "within noise: +0.0000 [+0.0000, +0.0000]"
    # a bound that rounds to zero keeps its sign, so "worse" never stands beside a bound shown as +0
    assert verdict(-0.0017, interval(-0.0034, -0.00003), "max", "", "BAM", 4) == \
        "BAM worse by 0.0017 [-0.0034, -0.00003]"
    assert decide(interval(-1.6, -0.8), "min", p_value=0.06) == "within noise"
    assert decide(interval(-1.6, -0.8), "min", p_value=0.01) == "better"
    with pytest.raises(ValueError, match="mode"):
        decide(interval(0.1, 0.2), "higher")


def test_items_line_up_by_key_or_refuse():
    assert align(np.array(["b", "a", "c"]), np.array(["a", "b", "c"])).tolist() == [1, 0, 2]
    with pytest.raises(ValueError, match="different items"):
        align(np.array([0, 1, 2]), np.array([0, 1, 3]))
    with pytest.raises(ValueError, match="twice"):
        align(np.array([0, 0, 1]), np.array([0, 1, 0]))
