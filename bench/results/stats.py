"""The Mann-Whitney U test on two sets of raw timing samples (scipy.stats.mannwhitneyu: normal approximation,
tie and continuity corrected).

Timings are skewed and heavy-tailed (a context switch adds a long sample), so a rank test says more about
"is B slower than A" than a t-test on means. The normal approximation is accurate for the sample counts the
harness records (n >= 20 by default) and the test refuses fewer than MIN_SAMPLES.
"""

from __future__ import annotations

import math
import statistics
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
    """scipy's Mann-Whitney U (normal approximation, tie and continuity corrected), in the fields the
    compare step reads. tests/judge/test_compare.py checks it against values computed by hand."""
    from scipy.stats import mannwhitneyu, norm

    n_x, n_y = len(x), len(y)
    if n_x < MIN_SAMPLES or n_y < MIN_SAMPLES:
        raise ValueError(f"the U test needs at least {MIN_SAMPLES} samples on each side, got {n_x} and {n_y}")
    if len({*x, *y}) == 1:  # every sample equal: no evidence either way (scipy would divide by zero)
        u = n_x * n_y / 2
        return UTest(n_x, n_y, u, u, 0.0, 1.0, 1.0, 1.0)

    def test(alternative: str):
        return mannwhitneyu(x, y, alternative=alternative, method="asymptotic", use_continuity=True)

    two_sided = test("two-sided")
    u_x = float(two_sided.statistic)
    p_two = min(1.0, float(two_sided.pvalue))
    diff = u_x - n_x * n_y / 2
    z = 0.0 if p_two >= 1.0 else math.copysign(float(norm.isf(p_two / 2)), diff)
    return UTest(
        n_x=n_x,
        n_y=n_y,
        u_x=u_x,
        u_y=n_x * n_y - u_x,
        z=z,
        p_greater=float(test("greater").pvalue),
        p_less=float(test("less").pvalue),
        p_two_sided=p_two,
    )


def slope(values: Sequence[float]) -> float:
    """Least-squares slope of values over their index (0 for fewer than two values): how fast a memory
    series grows per repetition."""
    if len(values) < 2:
        return 0.0
    return statistics.linear_regression(range(len(values)), values).slope
