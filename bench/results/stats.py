"""The Mann-Whitney U test on two sets of raw timing samples (scipy.stats.mannwhitneyu: normal approximation,
tie and continuity corrected), and the bootstrap interval of a ratio of two medians.

Timings are skewed and heavy-tailed (a context switch adds a long sample), so a rank test says more about
"is B slower than A" than a t-test on means. The normal approximation is accurate for the sample counts the
harness records (n >= 20 by default) and the test refuses fewer than MIN_SAMPLES.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

# Below this many samples on either side the normal approximation is too coarse to decide anything.
MIN_SAMPLES = 5


@dataclass(frozen=True)
class UTest:
    n_x: int
    n_y: int
    u_x: float  # pairs (x_i, y_j) with x_i > y_j, ties counted one half
    u_y: float
    z: float  # standardised u_x, continuity corrected towards the mean; > 0 when x tends to be larger
    p_greater: float  # one-sided, small when x tends to be larger than y
    p_less: float  # one-sided, small when x tends to be smaller than y
    p_two_sided: float


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> UTest:
    """The Mann-Whitney U test (normal approximation, tie and continuity corrected: the figures
    scipy.stats.mannwhitneyu(method="asymptotic", use_continuity=True) gives, which
    tests/results/test_scale.py checks on random samples), in the fields the compare step reads.
    tests/judge/test_compare.py checks it against values computed by hand.

    Computed here from the ranks rather than by three scipy calls: scipy's argument handling cost about
    7 ms per step compared, which was most of `compare`'s time over thousands of cases. The ranks are worked
    out in plain Python (a sort and one pass over it): for the few dozen samples of a step, numpy.unique's
    per-call cost was most of the test's time. Mid ranks are multiples of one half and the tie term a sum of
    integers, so the sums are exact in any order: the figures are bit for bit those of the numpy version."""
    n_x, n_y = len(x), len(y)
    if n_x < MIN_SAMPLES or n_y < MIN_SAMPLES:
        raise ValueError(f"the U test needs at least {MIN_SAMPLES} samples on each side, got {n_x} and {n_y}")
    if len({*x, *y}) == 1:  # every sample equal: no evidence either way (the variance would be 0)
        u = n_x * n_y / 2
        return UTest(n_x, n_y, u, u, 0.0, 1.0, 1.0, 1.0)
    n = n_x + n_y
    finite = math.isfinite(sum(x) + sum(y))  # NaN or inf anywhere (or an overflow to inf): numpy's way
    u_x, ties = _rank_sums(x, y) if finite else _numpy_rank_sums(x, y)
    u_y = n_x * n_y - u_x
    sigma = math.sqrt(n_x * n_y / 12 * ((n + 1) - ties / (n * (n - 1))))
    mean = n_x * n_y / 2

    def upper(u: float) -> float:  # P(U >= u) under the null, continuity corrected
        return 0.5 * math.erfc((u - mean - 0.5) / sigma / math.sqrt(2))

    p_two = min(1.0, 2 * upper(max(u_x, u_y)))
    z = 0.0 if p_two >= 1.0 else math.copysign((max(u_x, u_y) - mean - 0.5) / sigma, u_x - mean)
    return UTest(
        n_x=n_x,
        n_y=n_y,
        u_x=u_x,
        u_y=u_y,
        z=z,
        p_greater=upper(u_x),
        p_less=upper(u_y),
        p_two_sided=p_two,
    )


def median_ratio_interval(
    num: Sequence[float], den: Sequence[float], *, confidence: float, resamples: int, seed: int
) -> tuple[float, float, float] | None:
    """(median(num) / median(den), low, high): the ratio and its `confidence` percentile-bootstrap interval,
    each side resampled on its own (unpaired), `resamples` times from a generator seeded with `seed`. The one
    implementation behind the gate's `faster_than` (bench.judge.relative) and the report's adapter-over-base
    ratios (bench.report.bootstrap), so that what one of them needs (a guard, a fix) the other has too.

    None when either side has fewer than MIN_SAMPLES values (scipy refuses one value, and two to four give an
    interval that looks narrow and says nothing about the median), when a value is not finite, when
    median(den) is not above 0, or when the interval is not finite. Every value equal on each side: the ratio
    itself, with no spread to resample."""
    import numpy as np

    # scipy only where an interval is drawn: the gate's and the report's readers stay light without it
    from scipy.stats import bootstrap

    a, b = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if len(a) < MIN_SAMPLES or len(b) < MIN_SAMPLES or not np.median(b) > 0:
        return None
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None

    def ratio(x, y, axis=-1):
        return np.median(x, axis=axis) / np.median(y, axis=axis)

    estimate = float(ratio(a, b))
    if (a == a[0]).all() and (b == b[0]).all():
        return estimate, estimate, estimate
    res = bootstrap(
        (a, b),
        ratio,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        paired=False,
        batch=200,  # 200 resamples at a time: long request streams stay within a few MiB
        rng=np.random.default_rng(seed),
    )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    # A resample whose denominator's median is 0 (most of den at 0) makes the interval NaN or infinite.
    return (estimate, low, high) if math.isfinite(low) and math.isfinite(high) else None


def _rank_sums(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(U of x, the tie term sum(t^3 - t)) for finite samples: each distinct value's count, and the average
    of the 1-based ranks its group of ties shares, in one pass over the distinct values in order."""
    counts = Counter(x)
    counts.update(y)
    mid_rank: dict[float, float] = {}
    ties = 0.0
    end = 0
    for value in sorted(counts):
        count = counts[value]
        end += count
        mid_rank[value] = end - (count - 1) / 2.0
        ties += float(count) ** 3 - count
    n_x = len(x)
    return float(sum(map(mid_rank.__getitem__, x))) - n_x * (n_x + 1) / 2, ties


def _numpy_rank_sums(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """As _rank_sums, through numpy.unique, for samples that are not all finite (NaN sorts as numpy says)."""
    import numpy as np

    n_x = len(x)
    both = np.concatenate([np.asarray(x, dtype=float), np.asarray(y, dtype=float)])
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0
    u_x = float(mid_rank[inverse[:n_x]].sum()) - n_x * (n_x + 1) / 2
    return u_x, float((counts.astype(float) ** 3 - counts).sum())


def slope(values: Sequence[float]) -> float:
    """Least-squares slope of values over their index (0 for fewer than two values): how fast a memory
    series grows per repetition."""
    if len(values) < 2:
        return 0.0
    return statistics.linear_regression(range(len(values)), values).slope
