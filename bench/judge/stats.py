"""The Mann-Whitney U test on two sets of raw timing samples (normal approximation, tie and continuity corrected).

Timings are skewed and heavy-tailed (a context switch adds a long sample), so a rank test says more about
"is B slower than A" than a t-test on means. scipy is not a dependency; the normal approximation is accurate
for the sample counts the harness records (n >= 20 by default) and the test refuses fewer than MIN_SAMPLES.
"""

from __future__ import annotations

import math
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


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Average ranks (1-based) of `values`, and the size of every group of tied values."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> UTest:
    n_x, n_y = len(x), len(y)
    if n_x < MIN_SAMPLES or n_y < MIN_SAMPLES:
        raise ValueError(f"the U test needs at least {MIN_SAMPLES} samples on each side, got {n_x} and {n_y}")
    ranks, ties = _ranks([*x, *y])
    r_x = sum(ranks[:n_x])
    u_x = r_x - n_x * (n_x + 1) / 2
    u_y = n_x * n_y - u_x
    n = n_x + n_y
    mean = n_x * n_y / 2
    # Ties shrink the variance of U: the sum over tie groups of (t^3 - t) / (n (n - 1)).
    tie_term = sum(t**3 - t for t in ties) / (n * (n - 1))
    var = n_x * n_y / 12 * ((n + 1) - tie_term)
    if var <= 0:  # every sample equal: no evidence either way
        return UTest(n_x, n_y, u_x, u_y, 0.0, 1.0, 1.0, 1.0)
    sd = math.sqrt(var)
    diff = u_x - mean
    # Continuity correction: U moves in steps of 1/2, so shift it half a step towards the mean.
    z = math.copysign(max(abs(diff) - 0.5, 0.0), diff) / sd
    # One-sided tests shift by the half step towards the null: down for "x larger", up for "x smaller".
    z_greater = (u_x - mean - 0.5) / sd
    z_less = (u_x - mean + 0.5) / sd
    return UTest(
        n_x=n_x,
        n_y=n_y,
        u_x=u_x,
        u_y=u_y,
        z=z,
        p_greater=0.5 * math.erfc(z_greater / math.sqrt(2)),
        p_less=0.5 * math.erfc(-z_less / math.sqrt(2)),
        p_two_sided=min(1.0, math.erfc(abs(z) / math.sqrt(2))),
    )
