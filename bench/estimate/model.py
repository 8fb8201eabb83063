"""The estimate as pure functions: coefficients x features -> a case's wall time and peak RSS, cases on N jobs
-> the run's wall time, and the least-squares fit that calibrates the coefficients on measured cases."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from bench.estimate.policy import (
    DEFAULT_RUN_OVERHEAD_S,
    DEFAULT_WALL_COEFFICIENTS,
    LOAD_AVERAGE_TAU_S,
    LOAD_AWARE,
    PRIOR_WEIGHT_CASES,
    RSS_BASE_BYTES,
    RSS_PER_WEIGHT_BYTE,
    SIZE_SPREAD_TO_FIT,
    SIZE_TERMS,
    SIZE_TO_FIT_BYTES,
)


@dataclass(frozen=True)
class Coefficients:
    """What the prediction multiplies the features by. `calibrated_cases` 0: the built-in defaults alone."""

    wall_s: Mapping[str, float] = field(default_factory=lambda: DEFAULT_WALL_COEFFICIENTS)
    rss_base_bytes: float = RSS_BASE_BYTES
    rss_per_weight_byte: float = RSS_PER_WEIGHT_BYTE
    run_overhead_s: float = DEFAULT_RUN_OVERHEAD_S
    calibrated_cases: int = 0
    sizes_fitted: bool = False  # the terms that scale with model size fitted too (else at their defaults)


@dataclass(frozen=True)
class Sample:
    """One measured case: its features then, what it took, and what was predicted for it before it ran."""

    case_id: str
    features: Mapping[str, float]
    weight_bytes: float
    wall_s: float
    peak_rss_bytes: float | None
    jobs: int = 1
    estimate_wall_s: float | None = None
    estimate_rss_bytes: float | None = None


DEFAULTS = Coefficients()


def predict_wall_s(features: Mapping[str, float] | None, c: Coefficients) -> float | None:
    if features is None:
        return None
    return sum(c.wall_s.get(name, 0.0) * value for name, value in features.items())


def predict_rss_bytes(weight_bytes: float | None, c: Coefficients) -> float | None:
    if weight_bytes is None:
        return None
    return c.rss_base_bytes + c.rss_per_weight_byte * weight_bytes


def slowdown(load_1min: float, jobs: int, cores: int) -> float:
    """How many times its quiet time a case takes while `load_1min` runnable processes of other work share the
    `cores` with the run's `jobs` (each job one process at a time): at least 1."""
    if not LOAD_AWARE or cores < 1 or load_1min < 0:
        return 1.0
    return max(1.0, (load_1min + jobs) / cores)


def own_tail(cores: int, ran_s: float | None, ago_s: float) -> float:
    """How much of the 1-minute load average a run that kept `cores` busy for `ran_s` seconds still holds
    `ago_s` seconds after it ended; 0 where its duration is unknown (an interrupted run)."""
    if ran_s is None or ran_s <= 0 or cores < 1:
        return 0.0
    built = 1.0 - math.exp(-ran_s / LOAD_AVERAGE_TAU_S)
    return cores * built * math.exp(-max(ago_s, 0.0) / LOAD_AVERAGE_TAU_S)


def makespan_s(walls_s: Sequence[float], jobs: int) -> float:
    """The wall time of cases run in this order on `jobs` jobs: each next case starts on the job that frees
    first, as bench.runner.run.run_parallel hands them out."""
    free_at = [0.0] * max(1, jobs)
    for wall in walls_s:
        i = min(range(len(free_at)), key=free_at.__getitem__)
        free_at[i] += wall
    return max(free_at)


def run_wall_s(walls_s: Sequence[float], jobs: int, c: Coefficients) -> float:
    return c.run_overhead_s + makespan_s(walls_s, jobs)


def fit(
    rows: Sequence[Mapping[str, float]],
    targets: Sequence[float],
    prior: Mapping[str, float],
    prior_weight_cases: float = PRIOR_WEIGHT_CASES,
    intercept: str | None = None,
    held: Collection[str] = (),
    at_scale: Collection[str] = (),
) -> dict[str, float]:
    """Coefficients for `prior`'s names minimising squared error on (rows, targets) plus a pull towards the
    prior: each coefficient's pull weighs as much as `prior_weight_cases` rows holding its feature's mean
    square, or with an `intercept` (a feature 1 in every row, not pulled: ridge regression on centred
    features) its variance, so the pull on a slope never shifts the level. A feature no row varies keeps its
    prior (a feature no row has: the prior alone decides it); the `held` names keep their prior exactly. No coefficient is negative (a
    negative cost per step would predict less time for more work): those are held at 0 and the rest refitted.

    The `at_scale` names (the size terms) are pulled on their relative change, coefficient / prior - 1, all with
    one weight: as much as `prior_weight_cases` rows at the scale of the largest cases (the mean square of the
    seconds the priors predict for these terms, over the rows within SIZE_SPREAD_TO_FIT of the largest). Two
    things follow. The prior still weighs something when a hundred tiny models sit beside one 135M case (at a
    size term's mean square it weighed a hundredth of that case). And a case's miss is shared among the size
    terms as the square of what each predicts for it, so a compile-bound case's miss moves the compile term,
    not the compute term that a larger model's serving run would multiply 16-fold (seen: 2.0-2.9x)."""
    names = list(prior)
    n = len(rows)
    x = [[float(r.get(name, 0.0)) for name in names] for r in rows]
    fixed = {j: prior[name] for j, name in enumerate(names) if name in held}
    # What the held coefficients explain comes off the targets first.
    y = [t - sum(row[j] * v for j, v in fixed.items()) for row, t in zip(x, targets, strict=True)]
    centred = intercept in names
    scaled = [j for j, name in enumerate(names) if name in at_scale and prior[name] > 0]
    shared = _at_scale([[row[j] * prior[names[j]] for j in scaled] for row in x])
    strength = [
        prior_weight_cases * (shared / prior[name] ** 2 if j in scaled else _spread(x, j, centred=centred))
        or 1.0
        for j, name in enumerate(names)
    ]
    if intercept in names and n:
        strength[names.index(intercept)] = 1e-9  # free, yet the system stays solvable
    held_at_zero: set[int] = set()
    while True:
        free = [j for j in range(len(names)) if j not in held_at_zero and j not in fixed]
        a = [
            [sum(row[j] * row[k] for row in x) + (strength[j] if j == k else 0.0) for k in free] for j in free
        ]
        b = [
            sum(row[j] * t for row, t in zip(x, y, strict=True)) + strength[j] * prior[names[j]] for j in free
        ]
        solved = {**fixed, **dict(zip(free, _solve(a, b), strict=True))}
        negative = [j for j, v in solved.items() if v < 0 and j not in fixed]
        if not negative:
            return {name: solved.get(j, 0.0) for j, name in enumerate(names)}
        held_at_zero.update(negative)


def _spread(x: list[list[float]], j: int, *, centred: bool) -> float:
    """A feature's mean square over the rows, or (centred) its variance; a feature that never varies falls
    back to its mean square, so the prior holds it."""
    if not x:
        return 0.0
    column = [row[j] for row in x]
    mean_square = sum(v * v for v in column) / len(column)
    mean = sum(column) / len(column)
    variance = mean_square - mean * mean
    return variance if centred and variance > 1e-9 * mean_square else mean_square


def _at_scale(parts: list[list[float]]) -> float:
    """The mean square of the rows' summed `parts` (each term's predicted seconds), over the rows within
    SIZE_SPREAD_TO_FIT of the largest sum."""
    totals = [sum(row) ** 2 for row in parts]
    largest = max(totals, default=0.0)
    near = [t for t in totals if t * SIZE_SPREAD_TO_FIT**2 >= largest]
    return sum(near) / len(near) if near and largest > 0 else 0.0


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """a x = b by Gaussian elimination with partial pivoting (a is symmetric positive definite here: the
    prior's diagonal keeps it so)."""
    n = len(b)
    m = [row[:] + [rhs] for row, rhs in zip(a, b, strict=True)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            factor = m[r][col] / m[col][col]
            for k in range(col, n + 1):
                m[r][k] -= factor * m[col][k]
    out = [0.0] * n
    for r in range(n - 1, -1, -1):
        out[r] = (m[r][n] - sum(m[r][k] * out[k] for k in range(r + 1, n))) / m[r][r]
    return out


def calibrate(
    samples: Sequence[Sample], run_overheads_s: Sequence[float], defaults: Coefficients = DEFAULTS
) -> Coefficients:
    """Coefficients fitted to measured cases (wall and peak RSS), and the run overhead as the mean of the
    measured ones; with no sample, the defaults."""
    if not samples:
        return defaults
    # The size-driven terms are fitted only where the sizes vary enough to tell them from the per-pass and
    # per-check costs: on runs of one tiny model they would take any slope the noise gives them.
    sizes = [s.weight_bytes for s in samples if s.weight_bytes > 0]
    sizes_vary = bool(sizes) and max(sizes) >= max(SIZE_SPREAD_TO_FIT * min(sizes), SIZE_TO_FIT_BYTES)
    wall = fit(
        [s.features for s in samples],
        [s.wall_s for s in samples],
        defaults.wall_s,
        intercept="case",
        held=() if sizes_vary else SIZE_TERMS,
        at_scale=SIZE_TERMS,
    )
    with_rss = [s for s in samples if s.peak_rss_bytes is not None]
    rss = fit(
        [{"rss_base": 1.0, "weight_bytes": s.weight_bytes} for s in with_rss],
        [s.peak_rss_bytes for s in with_rss],
        {"rss_base": defaults.rss_base_bytes, "weight_bytes": defaults.rss_per_weight_byte},
        intercept="rss_base",
        held=() if sizes_vary else ("weight_bytes",),
    )
    overhead = sum(run_overheads_s) / len(run_overheads_s) if run_overheads_s else defaults.run_overhead_s
    return Coefficients(
        wall_s=MappingProxyType(wall),
        rss_base_bytes=rss["rss_base"],
        rss_per_weight_byte=rss["weight_bytes"],
        run_overhead_s=max(overhead, 0.0),
        calibrated_cases=len(samples),
        sizes_fitted=sizes_vary,
    )
