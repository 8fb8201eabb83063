"""The one bootstrap interval of a ratio of medians (bench.results.stats.median_ratio_interval), behind both the
gate's faster_than and the report's adapter-over-base ratios."""

from __future__ import annotations

import random

import pytest

from bench.judge.relative import ratio_ci
from bench.report.bootstrap import ratio_of_medians
from bench.results.stats import MIN_SAMPLES, median_ratio_interval

KW = {"confidence": 0.95, "resamples": 500, "seed": 0}


def _noisy(center: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [center * (1 + 0.2 * rng.random()) for _ in range(n)]


def test_the_interval_holds_the_ratio_and_is_seeded():
    a, b = _noisy(5.0, 40, 1), _noisy(10.0, 40, 2)
    ratio, low, high = median_ratio_interval(a, b, **KW)
    assert low < ratio < high and 0.4 < ratio < 0.6
    assert median_ratio_interval(a, b, **KW) == (ratio, low, high)
    # Control: another seed resamples differently.
    assert median_ratio_interval(a, b, **{**KW, "seed": 1}) != (ratio, low, high)


def test_equal_values_on_each_side_give_the_ratio_itself():
    assert median_ratio_interval([5.0] * MIN_SAMPLES, [10.0] * MIN_SAMPLES, **KW) == (0.5, 0.5, 0.5)
    # Control: one differing value on one side is spread to resample.
    _, low, high = median_ratio_interval([5.0] * (MIN_SAMPLES - 1) + [6.0], [10.0] * MIN_SAMPLES, **KW)
    assert low < high


@pytest.mark.parametrize(
    "num, den",
    [
        ([1.0] * (MIN_SAMPLES - 1), [2.0] * 10),  # too few on one side
        ([1.0] * 10, [2.0] * (MIN_SAMPLES - 1)),  # on the other
        ([1.0] * 10, [0.0] * 10),  # no ratio to a median of 0
        ([1.0] * 10, [2.0] * 9 + [float("nan")]),  # a value that is not finite
        # median 1, but most resamples' medians are 0: the interval would be infinite or NaN, and a NaN upper
        # end failed faster_than (NaN < factor is False)
        ([1.0, 2.0, 1.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0, 1.0]),
    ],
)
def test_no_interval_where_the_samples_cannot_give_one(num, den):
    assert median_ratio_interval(num, den, **KW) is None
    assert ratio_of_medians(num, den) is None and ratio_ci(num, den) is None


def test_the_gate_and_the_report_share_it():
    """Each is the shared function at its own resample count: the same estimate, and intervals that differ
    only by resampling noise."""
    a, b = _noisy(5.0, 30, 3), _noisy(10.0, 30, 4)
    gate, report = ratio_ci(a, b), ratio_of_medians(a, b)
    assert gate == median_ratio_interval(a, b, confidence=0.95, resamples=4000, seed=0)
    assert (report.estimate, report.low, report.high) == median_ratio_interval(
        a, b, confidence=0.95, resamples=2000, seed=0
    )
    assert gate[0] == report.estimate and report.n == 60
