"""Is a baseline-vs-variant difference bigger than the noise? Paired bootstrap, McNemar, verdicts.

Both runs of a pair are scored on the same test items (images, samples), so the difference is
measured item by item: one resample of the items is applied to both runs, and what varies between
resamples is only which items were drawn, not how the two models happened to differ on
different draws. See ``docs/statistics.md`` for the method and what the words of a verdict mean.

Every statistic here is a function of *item weights*: ``statistic(weights)`` takes an
``(R, n)`` array, row ``r`` holding how many times each of the ``n`` items was drawn in resample
``r``, and returns the ``R`` values of the statistic. A mean, a pooled ratio of sums (mIoU) and
COCO's AP re-accumulation are all written that way, so one resampling loop serves every task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from tasks.utils.formatting import signed

# 10,000 resamples put the Monte Carlo error of a 95% percentile bound at about 1% of the
# interval's width; statistics that re-accumulate a whole curve per resample (COCO AP) get fewer.
RESAMPLES = 10_000
COSTLY_RESAMPLES = 1_000
# A fixed seed: the same runs always give the same interval (the year of the BAM paper).
RESAMPLING_SEED = 2018
CONFIDENCE = 0.95
ALPHA = 0.05  # the level of a test (McNemar's) that a "better" or "worse" must also pass
# Draw at most about this many item indices at once (memory: 8 bytes each, a few times over).
_DRAWS_PER_CHUNK = 2_000_000

Statistic = Callable[[np.ndarray], np.ndarray]  # (R, n) item weights -> (R,) values


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    confidence: float
    resamples: int
    seed: int
    levels: str  # what was resampled: "images" or "seeds × images"

    @property
    def kind(self) -> str:
        """How a table names this interval, e.g. ``95% percentile bootstrap over images (10,000)``."""
        return (f"{round(100 * self.confidence)}% percentile bootstrap over {self.levels} "
                f"({self.resamples:,} resamples, seed {self.seed})")

    def format(self, digits: int) -> str:
        """``[+0.18, +0.66]``: the bounds signed, as every table and verdict prints them."""
        return f"[{signed(self.low, digits)}, {signed(self.high, digits)}]"


@dataclass(frozen=True)
class McNemar:
    baseline_only: int  # items the baseline got right and the variant wrong
    variant_only: int  # and the other way round
    p_value: float


def weighted_mean(values: np.ndarray) -> Statistic:
    """The mean of per-item ``values`` under resample weights (each resample draws n items)."""
    values = np.asarray(values, dtype=np.float64)
    return lambda weights: weights @ values / weights.sum(axis=1)


def resample_weights(rng: np.random.Generator, n_items: int, n_resamples: int) -> np.ndarray:
    """``(n_resamples, n_items)`` counts: how often each item is drawn when ``n_items`` items are
    drawn with replacement, once per resample (the ordinary nonparametric bootstrap)."""
    draws = rng.integers(0, n_items, size=(n_resamples, n_items))
    flat = draws + n_items * np.arange(n_resamples)[:, None]
    return np.bincount(flat.ravel(), minlength=n_resamples * n_items).reshape(n_resamples, n_items).astype(np.float64)


def bootstrap_difference(baselines: Sequence[Statistic], variants: Sequence[Statistic], n_items: int, *,
                         pair_seeds: bool = True, resamples: int = RESAMPLES,
                         seed: int = RESAMPLING_SEED) -> tuple[float, Interval]:
    """Mean over seeds of ``variant − baseline`` and its percentile bootstrap interval.

    ``baselines`` and ``variants`` hold one statistic per seed, all over the same ``n_items``
    test items in the same order. Each resample draws the items once and applies that draw to
    every run (the test set is shared by all of them), then, with several seeds, draws the seeds
    with replacement: seed pairs (baseline and variant of one seed together) when ``pair_seeds``,
    else each model's seeds on their own. With one seed per model this is the paired bootstrap
    over items. The point estimate uses every item and seed once.
    """
    if pair_seeds and len(baselines) != len(variants):
        raise ValueError(f"pairing seeds needs as many baseline runs as variant runs, got "
                         f"{len(baselines)} and {len(variants)}")
    ones = np.ones((1, n_items))
    estimate = float(np.mean([s(ones)[0] for s in variants]) - np.mean([s(ones)[0] for s in baselines]))
    rng = np.random.default_rng(seed)
    several = len(baselines) > 1 or len(variants) > 1
    chunk = max(1, min(resamples, _DRAWS_PER_CHUNK // max(n_items, 1)))
    replicates = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        weights = resample_weights(rng, n_items, size)
        base = np.stack([s(weights) for s in baselines], axis=1)  # (R, seeds)
        var = np.stack([s(weights) for s in variants], axis=1)
        base_picks = var_picks = np.zeros((size, 1), dtype=np.int64)  # one seed each: nothing to draw
        if several:
            base_picks = rng.integers(0, len(baselines), size=(size, len(baselines)))
            var_picks = base_picks if pair_seeds else rng.integers(0, len(variants), size=(size, len(variants)))
        replicates.append(np.take_along_axis(var, var_picks, axis=1).mean(axis=1)
                          - np.take_along_axis(base, base_picks, axis=1).mean(axis=1))
    replicates = np.concatenate(replicates)
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.nanpercentile(replicates, [tail, 100 - tail])
    levels = "seeds × images" if several else "images"
    return estimate, Interval(float(low), float(high), CONFIDENCE, resamples, seed, levels)


def mcnemar_exact(baseline_correct: np.ndarray, variant_correct: np.ndarray) -> McNemar:
    """Exact McNemar test: a two-sided binomial test (p = 1/2) on the discordant items.

    Only the items that exactly one of the two models gets right carry information about which
    is better; under "no difference" each such item is equally likely to favour either model.
    """
    from scipy.stats import binomtest

    baseline_correct = np.asarray(baseline_correct, dtype=bool)
    variant_correct = np.asarray(variant_correct, dtype=bool)
    baseline_only = int(np.count_nonzero(baseline_correct & ~variant_correct))
    variant_only = int(np.count_nonzero(variant_correct & ~baseline_correct))
    discordant = baseline_only + variant_only
    p_value = float(binomtest(variant_only, discordant).pvalue) if discordant else 1.0
    return McNemar(baseline_only, variant_only, p_value)


def decide(interval: Interval, mode: str, p_value: float | None = None) -> str:
    """"better" or "worse" (the variant) only when the whole interval lies on one side of 0 and,
    where a test's ``p_value`` is given, it is below :data:`ALPHA` too; "within noise" otherwise.
    ``mode`` is "max" when higher is better (PSNR, mIoU, AP), "min" when lower is (error rates)."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    # NaN bounds fail both comparisons: within noise.
    if not (interval.low > 0 or interval.high < 0) or (p_value is not None and not p_value < ALPHA):
        return "within noise"
    return "better" if (interval.low > 0) == (mode == "max") else "worse"


def verdict(delta: float, interval: Interval, mode: str, unit: str, variant: str, digits: int = 2,
            p_value: float | None = None) -> str:
    """Words for a difference (``variant − baseline``) that cannot claim more than the interval
    (:func:`decide`): ``BAM better by 0.42 dB [+0.18, +0.66]``, ``within noise: +0.05 dB
    [-0.12, +0.21]``; the bracket is always the interval of the signed difference."""
    unit = f" {unit}" if unit else ""
    decision = decide(interval, mode, p_value)
    if decision == "within noise":
        return f"within noise: {signed(delta, digits)}{unit} {interval.format(digits)}"
    return f"{variant} {decision} by {signed(abs(delta), digits)[1:]}{unit} {interval.format(digits)}"
