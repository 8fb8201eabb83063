"""95 % confidence intervals for the report's medians: scipy's percentile bootstrap over the raw samples the
step records keep (TimingStats.samples_ms).

Several steps pooled into one figure are resampled each within itself (scipy's multi-sample bootstrap,
unpaired): every step keeps its own number of calls, so a step with many calls cannot crowd out another.
The generator is seeded, so a report rendered twice from one results file shows the same intervals.

A pool of more than MAX_BOOTSTRAP_SAMPLES calls gets the median's distribution-free order-statistic interval
instead (the binomial one: two order statistics of the pooled calls, read after one partition): the
bootstrap's cost is resamples x calls, a minute of CPU per row at 750,000 pooled calls (20,000 cases), and at
that many calls both intervals are a few hundredths of the spread wide. The report names the rows that got it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Fewer calls than MIN_SAMPLES give an interval that says nothing (the median of 3 calls): none is shown.
from bench.results.stats import MIN_SAMPLES, median_ratio_interval

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
# Pooled calls above which the interval is by order statistics, not the bootstrap (about 1 s of CPU per row here).
MAX_BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP, ORDER_STATISTICS = "percentile bootstrap", "order statistics"


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    n: int  # samples behind it, over every pooled step
    method: str = BOOTSTRAP  # or ORDER_STATISTICS (more than MAX_BOOTSTRAP_SAMPLES pooled calls)


def _median(*samples, axis=-1):
    import numpy as np

    return np.median(np.concatenate(samples, axis=axis), axis=axis)


def pooled_median(groups: Sequence[Sequence[float]]) -> Interval | None:
    """The median of every sample of `groups` together, with its 95 % bootstrap interval; None when fewer than
    MIN_SAMPLES samples in all, or a group is empty."""
    import numpy as np

    arrays = [np.asarray(g, dtype=float) for g in groups if len(g)]
    n = sum(len(a) for a in arrays)
    if not arrays or n < MIN_SAMPLES:
        return None
    estimate = float(_median(*arrays))
    pooled = np.concatenate(arrays)
    if (pooled == pooled[0]).all():  # every call took the same time: no spread to resample
        return Interval(estimate, estimate, estimate, n)
    if n > MAX_BOOTSTRAP_SAMPLES:
        return order_statistic_interval(pooled, estimate)
    # Imported here, not above: the order statistics need no scipy (lower_rank).
    from scipy.stats import bootstrap

    # A step of one call resamples to itself, and scipy refuses a one-value sample (it crashed the end of a run
    # whose steps had one timed call beside others with several): the one-call steps are pooled into one
    # group, resampled together when there are several, held fixed when there is one.
    many = [a for a in arrays if len(a) > 1]
    ones = np.concatenate([a for a in arrays if len(a) == 1] or [np.empty(0)])
    if len(ones) > 1:
        many.append(ones)
    fixed = ones if len(ones) == 1 else None

    def statistic(*samples, axis=-1):
        if fixed is not None:
            samples = (*samples, np.broadcast_to(fixed, (*samples[0].shape[:-1], 1)))
        return _median(*samples, axis=axis)

    res = bootstrap(
        tuple(many),
        statistic,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=True,
        paired=False,
        batch=200,  # 200 resamples at a time: 10,000-call steps stay within a few MiB
        rng=np.random.default_rng(SEED),
    )
    ci = res.confidence_interval
    return Interval(estimate, float(ci.low), float(ci.high), n)


def order_statistic_interval(samples, estimate: float) -> Interval:
    """The CONFIDENCE interval of the median of `samples` (a numpy array, taken as independent calls) between
    two of their order statistics: the r-th smallest and the r-th largest, r the largest rank with
    P(Binomial(n, 1/2) < r) <= (1 - CONFIDENCE) / 2, so that it holds the median with at least CONFIDENCE."""
    import numpy as np

    n = len(samples)
    r = max(lower_rank(n), 1)  # 1-based rank; P(B <= r - 1) < alpha / 2
    low, high = np.partition(samples, (r - 1, n - r))[[r - 1, n - r]]
    return Interval(estimate, float(low), float(high), n, ORDER_STATISTICS)


def lower_rank(n: int) -> int:
    """The (1 - CONFIDENCE) / 2 quantile of Binomial(n, 1/2) (scipy.stats.binom.ppf's value, tested): the
    smallest k with P(B <= k) >= (1 - CONFIDENCE) / 2, searched from the normal approximation's k. No scipy:
    importing even scipy.special took 0.8 s, a third of the answers' 2.5 s at 20,000 cases, where every
    row's pool is past MAX_BOOTSTRAP_SAMPLES and gets this interval."""
    q = (1 - CONFIDENCE) / 2
    k = max(int(n / 2 - 0.98 * math.sqrt(n)), 0)  # z(0.975) / 2 = 0.98: a few ranks from the answer
    while k > 0 and binomial_half_cdf(k - 1, n) >= q:
        k -= 1
    while binomial_half_cdf(k, n) < q:
        k += 1
    return k


def binomial_half_cdf(k: int, n: int) -> float:
    """P(B <= k) for B ~ Binomial(n, 1/2): the terms C(n, i) / 2^n summed from i = k down, the first from
    log-gamma, each next one the last times i / (n - i + 1), until they no longer change the sum. Below the
    mean the terms shrink at least geometrically, so a few thousand of them at a million calls; above it,
    by symmetry."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if 2 * k > n:
        return 1.0 - binomial_half_cdf(n - k - 1, n)
    term = math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2))
    total = 0.0
    i = k
    while i >= 0 and term > total * 1e-17:
        total += term
        term *= i / (n - i + 1)
        i -= 1
    return total


def ratio_of_medians(num: Sequence[float], den: Sequence[float]) -> Interval | None:
    """median(num) / median(den), both resampled independently (two steps of one case): the adapter's cost over
    the base model's. None when either side has fewer than MIN_SAMPLES samples."""
    found = median_ratio_interval(num, den, confidence=CONFIDENCE, resamples=RESAMPLES, seed=SEED)
    if found is None:
        return None
    return Interval(*found, len(num) + len(den))
