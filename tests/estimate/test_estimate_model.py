"""The estimate's pure model: prediction, jobs, and the least-squares fit towards the defaults."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from bench.estimate.model import (
    DEFAULTS,
    Coefficients,
    Sample,
    calibrate,
    fit,
    makespan_s,
    own_tail,
    predict_rss_bytes,
    predict_wall_s,
    run_wall_s,
    slowdown,
)
from bench.estimate.policy import DEFAULT_WALL_COEFFICIENTS


def test_prediction_is_coefficients_times_features():
    c = Coefficients(wall_s={"case": 0.5, "steps": 0.25, "compiles:aot_eager": 2.0})
    assert predict_wall_s({"case": 1, "steps": 4, "compiles:aot_eager": 3}, c) == pytest.approx(7.5)
    assert predict_wall_s({"case": 1, "steps": 4}, c) == pytest.approx(1.5)  # no compile, no compile cost
    assert predict_wall_s(None, c) is None  # unknown size stays unknown
    assert predict_rss_bytes(1000.0, Coefficients(rss_base_bytes=10, rss_per_weight_byte=2)) == 2010
    assert predict_rss_bytes(None, DEFAULTS) is None


@pytest.mark.parametrize(
    "walls, jobs, expected",
    [
        ([1, 1, 1, 1], 1, 4),
        ([1, 1, 1, 1], 2, 2),
        ([3, 1, 1, 1], 2, 3),  # the long case on one job, the three short on the other
        ([1, 1, 1, 3], 2, 4),  # in order: the long one starts last and ends the run
        ([5], 4, 5),  # more jobs than cases: the longest case
        ([], 2, 0),
    ],
)
def test_makespan_hands_cases_out_in_order(walls, jobs, expected):
    assert makespan_s(walls, jobs) == expected


def test_run_wall_adds_the_run_overhead():
    assert run_wall_s([2, 2], 2, Coefficients(run_overhead_s=5)) == 7


def _rows(n, seed=0):
    rng = random.Random(seed)
    return [
        {
            "case": 1.0,
            "steps": rng.randint(2, 20),
            "checks": rng.randint(1, 10),
            "compiles:aot_eager": rng.randint(0, 6),
        }
        for _ in range(n)
    ]


def test_fit_recovers_the_coefficients_that_made_the_data():
    truth = {"case": 0.8, "steps": 0.05, "checks": 0.3, "compiles:aot_eager": 2.5}
    rows = _rows(200)
    targets = [sum(truth[k] * r[k] for k in truth) for r in rows]
    prior = {"case": 0.1, "steps": 1.0, "checks": 0.01, "compiles:aot_eager": 0.5}
    fitted = fit(rows, targets, prior, prior_weight_cases=0.01)
    for k in truth:
        assert fitted[k] == pytest.approx(truth[k], rel=0.02), k
    # Negative control: the prior alone is far off on the same rows.
    assert max(abs(sum(prior[k] * r[k] for k in prior) - y) for r, y in zip(rows, targets, strict=True)) > 5


def test_a_feature_the_data_never_varies_keeps_its_prior():
    rows = [{k: v for k, v in r.items() if k != "compiles:aot_eager"} for r in _rows(50)]
    targets = [1.0 + 0.1 * r["steps"] for r in rows]
    prior = {"case": 1.0, "steps": 0.1, "checks": 0.0, "compiles:aot_eager": 2.5}
    assert fit(rows, targets, prior)["compiles:aot_eager"] == pytest.approx(2.5)


def test_no_coefficient_goes_negative():
    rows = _rows(50, seed=1)
    # Time falling with more checks: an unconstrained fit gives checks a negative cost.
    targets = [5.0 - 0.4 * r["checks"] + 0.1 * r["steps"] for r in rows]
    fitted = fit(rows, targets, {"case": 1.0, "steps": 0.1, "checks": 0.1, "compiles:aot_eager": 1.0}, 0.01)
    assert fitted["checks"] == 0.0
    assert all(v >= 0 for v in fitted.values())


def test_calibrate_fits_wall_rss_and_overhead():
    rows = _rows(40, seed=2)
    samples = [
        Sample(
            f"c{i}",
            r,
            weight_bytes=1e7 * (i + 1),
            wall_s=1.0 + 0.2 * r["steps"],
            peak_rss_bytes=4e8 + 2 * 1e7 * (i + 1),
        )
        for i, r in enumerate(rows)
    ]
    c = calibrate(samples, [3.0, 5.0])
    assert c.calibrated_cases == 40
    assert c.run_overhead_s == 4.0
    # 40 cases against a prior worth 3: the slope pulled a little towards the default, the level moved so
    # that the prediction at the cases' mean size stays the data's.
    lo, hi = sorted((2.0, 2.0 + 0.1 * (DEFAULTS.rss_per_weight_byte - 2.0)))
    assert lo <= c.rss_per_weight_byte <= hi and c.rss_per_weight_byte != 2.0
    mean_size = sum(s.weight_bytes for s in samples) / len(samples)
    assert predict_rss_bytes(mean_size, c) == pytest.approx(4e8 + 2 * mean_size, rel=1e-6)
    predicted = [predict_wall_s(s.features, c) for s in samples]
    # The prior (worth 3 cases) still pulls a little at 40 cases ...
    assert max(abs(p - s.wall_s) / s.wall_s for p, s in zip(predicted, samples, strict=True)) < 0.25
    # ... and fades as cases come in.
    many = [
        Sample(f"c{i}", r, 1e6, wall_s=1.0 + 0.2 * r["steps"], peak_rss_bytes=None)
        for i, r in enumerate(_rows(800))
    ]
    c_many = calibrate(many, [])
    assert max(abs(predict_wall_s(s.features, c_many) - s.wall_s) / s.wall_s for s in many) < 0.03
    assert c_many.rss_base_bytes == DEFAULTS.rss_base_bytes  # no RSS measured: the RSS defaults stay
    # Negative control: the uncalibrated defaults do not fit these cases.
    default_predicted = [predict_wall_s(s.features, DEFAULTS) for s in samples]
    assert max(abs(p - s.wall_s) / s.wall_s for p, s in zip(default_predicted, samples, strict=True)) > 0.3


def test_the_intercept_is_not_pulled_towards_its_prior():
    rows = [{"one": 1.0, "x": float(i)} for i in range(20)]
    targets = [100.0 + 2.0 * r["x"] for r in rows]
    prior = {"one": 0.0, "x": 2.0}
    assert fit(rows, targets, prior, intercept="one")["one"] == pytest.approx(100.0, rel=1e-6)
    # Negative control: pulled like every other coefficient, the level lands well below the data's.
    assert fit(rows, targets, prior)["one"] < 95.0


def test_size_terms_keep_their_defaults_on_tiny_models():
    # Cases of one tiny model (1 MB of weights): the compute and load terms cannot be told from the per-pass
    # costs, so they keep their defaults, and so does RSS per weight byte; the level still follows the data.
    rows = [{"case": 1.0, "passes": float(p), "gparam_tokens": p * 1e-3} for p in range(10, 50)]
    samples = [
        Sample(f"c{i}", r, 1e6, wall_s=0.01 * r["passes"], peak_rss_bytes=3e8) for i, r in enumerate(rows)
    ]
    c = calibrate(samples, [])
    assert c.wall_s["gparam_tokens"] == DEFAULTS.wall_s["gparam_tokens"]
    assert c.rss_per_weight_byte == DEFAULTS.rss_per_weight_byte
    assert c.rss_base_bytes == pytest.approx(3e8 - DEFAULTS.rss_per_weight_byte * 1e6)
    # Negative control: the same cases on a model 100x larger fit the size terms too.
    big = [
        Sample(s.case_id, s.features, 1e8 * (1 + 9 * (i % 2)), s.wall_s, s.peak_rss_bytes)
        for i, s in enumerate(samples)
    ]
    assert calibrate(big, []).wall_s["gparam_tokens"] != DEFAULTS.wall_s["gparam_tokens"]


def test_one_large_case_among_tiny_ones_moves_a_size_term_a_quarter_of_the_way():
    """The prior of a size term weighs as much as PRIOR_WEIGHT_CASES (3) cases at the scale of the largest
    ones, so the first realistic case among a hundred tiny ones moves it 1/(1 + 3) of the way to what that
    case alone says. Seen without this: one 135M case took the compute term from 0.044 to 0.11 and the next
    run, a 0.5B one, was predicted at 2.9x."""
    prior = {"case": 0.5, "gparam_tokens": 1.0}
    rows = [{"case": 1.0, "gparam_tokens": 0.01}] * 100 + [{"case": 1.0, "gparam_tokens": 100.0}]
    targets = [0.5 + 2.0 * r["gparam_tokens"] for r in rows]  # the data's own slope: 2.0
    scaled = fit(rows, targets, prior, intercept="case", at_scale=("gparam_tokens",))
    assert scaled["gparam_tokens"] == pytest.approx(1.25, abs=0.01)
    # Negative control: weighed at the column's spread over every row, the prior is worth a few hundredths of
    # that one case, and the case decides the term alone.
    assert fit(rows, targets, prior, intercept="case")["gparam_tokens"] > 1.95
    # More large cases outweigh the prior: thirty of them take the term most of the way.
    many = rows + [{"case": 1.0, "gparam_tokens": 100.0 + i} for i in range(30)]
    slope = fit(many, [0.5 + 2.0 * r["gparam_tokens"] for r in many], prior, at_scale=("gparam_tokens",))
    assert slope["gparam_tokens"] > 1.85
    # calibrate weighs every size term so.
    samples = [
        Sample(f"c{i}", r, 1e6 if r["gparam_tokens"] < 1 else 1e9, t, None)
        for i, (r, t) in enumerate(zip(rows, targets, strict=True))
    ]
    moved = calibrate(samples, [], replace(DEFAULTS, wall_s={"case": 0.5, "gparam_tokens": 1.0}))
    assert moved.wall_s["gparam_tokens"] == pytest.approx(1.25, abs=0.01)


def test_a_cases_miss_moves_the_size_term_it_spends_its_time_on():
    """A compile-bound realistic case (30 layers traced, 12 s predicted, against 2.8 s of compute) measured
    4.6 s over its prediction: the layer term takes the miss, not the compute term a larger model multiplies."""
    prior = {"case": 0.5, "gparam_tokens": 0.05, "compile_layers": 0.4}
    rows = [{"case": 1.0, "gparam_tokens": 0.5, "compile_layers": 2.0}] * 100
    rows.append({"case": 1.0, "gparam_tokens": 56.0, "compile_layers": 30.0})
    targets = [0.5 + 0.05 * r["gparam_tokens"] + 0.4 * r["compile_layers"] for r in rows]
    targets[-1] += 4.6
    c = fit(rows, targets, prior, intercept="case", at_scale=("gparam_tokens", "compile_layers"))
    compute_s = 56.0 * (c["gparam_tokens"] - 0.05)
    layers_s = 30.0 * (c["compile_layers"] - 0.4)
    # Shared as the square of what each term predicts for the case: (12 / 2.8) ** 2, about 18 to 1.
    assert layers_s > 0.5 and 0 <= compute_s < layers_s / 10
    # Control: the same miss on a compute-bound case (a serving stream, no compile) moves the compute term.
    rows[-1] = {"case": 1.0, "gparam_tokens": 890.0, "compile_layers": 0.0}
    targets[-1] = 0.5 + 0.05 * 890.0 + 4.6
    c = fit(rows, targets, prior, intercept="case", at_scale=("gparam_tokens", "compile_layers"))
    assert 890.0 * (c["gparam_tokens"] - 0.05) > 0.5 and c["compile_layers"] == pytest.approx(0.4, abs=1e-3)


def test_calibrate_without_samples_is_the_defaults():
    assert calibrate([], [1.0]) is DEFAULTS
    assert dict(DEFAULTS.wall_s) == dict(DEFAULT_WALL_COEFFICIENTS)


@pytest.mark.parametrize(
    "load, jobs, cores, factor",
    [
        (0.0, 2, 2, 1.0),  # a quiet machine: each job has its core
        (0.3, 1, 2, 1.0),  # a spare core absorbs a little other work
        (2.0, 2, 2, 2.0),  # two other busy processes: each core shared by two
        (6.6, 2, 2, 4.3),
        (6.6, 2, 16, 1.0),  # the same load on a big machine costs nothing
    ],
)
def test_slowdown_from_the_machines_load(load, jobs, cores, factor):
    assert slowdown(load, jobs, cores) == pytest.approx(factor)


@pytest.mark.parametrize(
    "cores, ran_s, ago_s, tail",
    [
        (2, 600.0, 0.0, 2.0),  # a long run that just ended: the whole 1-minute average is its own
        (2, 600.0, 60.0, 2.0 * 0.36788),  # a minute later: 1/e of it
        (2, 600.0, 300.0, 2.0 * 0.00674),  # five minutes later: gone
        (2, 30.0, 0.0, 2.0 * 0.39347),  # a 30 s run never built the average up to its cores
        (2, 600.0, -5.0, 2.0),  # an end stamped in the future (clock skew): as if it just ended
        (2, None, 0.0, 0.0),  # an interrupted run: its duration unknown, nothing taken out
        (16, 600.0, 0.0, 16.0),
    ],
)
def test_own_tail_is_the_damped_load_a_finished_run_leaves(cores, ran_s, ago_s, tail):
    assert own_tail(cores, ran_s, ago_s) == pytest.approx(tail, rel=1e-3, abs=1e-9)
