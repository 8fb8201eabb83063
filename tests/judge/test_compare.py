"""Comparison decisions: the U test against hand-computed values, each judge with its negative control, the
threshold config, and the timing basis. Pure functions on numbers and real results files; no torch."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from bench.errors import BenchInputError
from bench.judge.compare import compare, timing_basis
from bench.judge.findings import judge_number, judge_samples, judge_verdict
from bench.judge.thresholds import DEFAULT_POLICY, load_policy, with_flags
from bench.results.stats import mann_whitney_u
from bench.results.store import load
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "results"
KEY = ("case[x]", 4, "forward")


# ---------------------------------------------------------------------------------------------------------
# Mann-Whitney U, by hand


def test_u_test_separated_samples_by_hand():
    # x = 1..5 all below y = 6..10: U_x = 0, U_y = 25. Mean n1 n2 / 2 = 12.5; no ties, so
    # var = n1 n2 (n + 1) / 12 = 25 * 11 / 12. Two-sided z with continuity: (0 - 12.5 + 0.5) / sd.
    t = mann_whitney_u([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    sd = math.sqrt(25 * 11 / 12)
    assert (t.u_x, t.u_y) == (0.0, 25.0)
    assert t.z == pytest.approx(-12.0 / sd)
    assert t.p_two_sided == pytest.approx(math.erfc(12.0 / sd / math.sqrt(2)))
    assert t.p_two_sided == pytest.approx(0.01219, abs=1e-5)  # the tabulated normal tail at |z| = 2.507
    # One-sided: x is smaller, so "x greater" is implausible and "x less" is not.
    assert t.p_less == pytest.approx(0.5 * math.erfc(12.0 / sd / math.sqrt(2)))
    assert t.p_greater == pytest.approx(1 - 0.5 * math.erfc(13.0 / sd / math.sqrt(2)))
    swapped = mann_whitney_u([6, 7, 8, 9, 10], [1, 2, 3, 4, 5])
    assert swapped.p_greater == pytest.approx(t.p_less) and swapped.z == pytest.approx(-t.z)


def test_u_test_with_ties_by_hand():
    # x = [1, 2, 2, 3, 3], y = [2, 3, 3, 4, 4]. Pairs with x > y count 1, ties 1/2:
    #   x=1: 0; x=2 (twice): tie with y=2 -> 0.5 each; x=3 (twice): beats y=2 (1), ties y=3,3 (1) -> 2 each.
    # U_x = 0 + 1 + 4 = 5. Tie groups in the pooled 10: {2: 3}, {3: 4}, {4: 2} (and 1 alone):
    #   sum(t^3 - t) = 24 + 60 + 6 = 90; var = 25 / 12 * (11 - 90 / (10 * 9)) = 25 / 12 * 10.
    t = mann_whitney_u([1, 2, 2, 3, 3], [2, 3, 3, 4, 4])
    sd = math.sqrt(25 / 12 * 10)
    assert t.u_x == 5.0
    assert t.z == pytest.approx((5 - 12.5 + 0.5) / sd)
    assert t.p_two_sided == pytest.approx(math.erfc(7.0 / sd / math.sqrt(2)))
    # Without the tie correction the variance would be 25 * 11 / 12: the test must not use it.
    assert t.z != pytest.approx((5 - 12.5 + 0.5) / math.sqrt(25 * 11 / 12))


def test_u_test_identical_samples_and_too_few():
    t = mann_whitney_u([2.0] * 6, [2.0] * 6)
    assert t.p_two_sided == 1.0 and t.p_greater == 1.0 and t.p_less == 1.0
    same = mann_whitney_u([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6])
    assert same.z == 0.0 and same.p_two_sided == 1.0
    with pytest.raises(ValueError, match="at least 5"):
        mann_whitney_u([1, 2, 3, 4], [1, 2, 3, 4, 5])


# ---------------------------------------------------------------------------------------------------------
# Latency samples

BASE = [
    1.00,
    1.02,
    1.01,
    1.05,
    0.99,
    1.03,
    1.00,
    1.04,
    1.02,
    1.01,
    1.06,
    1.00,
    1.03,
    1.02,
    1.01,
    1.00,
    1.05,
    1.02,
]


def test_slower_code_is_a_regression():
    p = DEFAULT_POLICY["latency_ms"]
    f = judge_samples(p, KEY, BASE, [x * 1.5 for x in BASE])
    assert f.status == "regression" and f.fails_gate
    assert f.change_rel == pytest.approx(0.5, abs=0.02) and f.p_value < 1e-6 and f.n == (18, 18)
    assert "U test" in f.message and "fastest +50%" in f.message


def test_same_code_is_unchanged():
    f = judge_samples(DEFAULT_POLICY["latency_ms"], KEY, BASE, list(reversed(BASE)))
    assert f.status == "unchanged" and not f.fails_gate


def test_busy_machine_is_noise_not_a_regression():
    # Contention: most calls delayed, the fastest ones untouched. Significant and far beyond rel, but the
    # floor did not move: not slower code.
    busy = [x * 3 for x in BASE[:14]] + BASE[14:]
    f = judge_samples(DEFAULT_POLICY["latency_ms"], KEY, BASE, busy)
    assert f.status == "noise" and "contention" in f.message and not f.fails_gate


def test_small_significant_shift_is_within_threshold():
    f = judge_samples(DEFAULT_POLICY["latency_ms"], KEY, BASE, [x * 1.1 for x in BASE])
    assert f.status == "noise" and f.p_value < 0.01 and "within rel" in f.message


def test_faster_code_is_an_improvement():
    f = judge_samples(DEFAULT_POLICY["latency_ms"], KEY, BASE, [x * 0.5 for x in BASE])
    assert f.status == "improvement" and not f.fails_gate


def test_too_few_samples_are_not_compared():
    f = judge_samples(DEFAULT_POLICY["latency_ms"], KEY, BASE[:4], BASE)
    assert f.status == "not_compared" and "fewer than 5" in f.message


def test_ratio_samples_cancel_a_uniformly_slower_machine():
    # A machine twice as slow doubles both the step and its reference: the ratio, and the verdict, stay.
    p = DEFAULT_POLICY["latency_over_first"]
    ref = BASE
    f = judge_samples(p, KEY, BASE, [x * 2 for x in BASE], ref, [x * 2 for x in ref])
    assert f.status in ("unchanged", "noise") and not f.fails_gate
    g = judge_samples(
        p, KEY, BASE, [x * 4 for x in BASE], ref, [x * 2 for x in ref]
    )  # the step got 2x slower
    assert g.status == "regression" and g.unit == "ratio"


# ---------------------------------------------------------------------------------------------------------
# Counts, bytes, verdicts


def test_any_recompile_rise_is_a_regression():
    p = DEFAULT_POLICY["recompiles"]
    assert judge_number(p, KEY, 0, 1).status == "regression"
    assert judge_number(p, KEY, 1, 1).status == "unchanged"
    assert judge_number(p, KEY, 2, 1).status == "improvement"
    assert judge_number(p, KEY, None, 1).status == "not_compared"


def test_memory_needs_both_thresholds():
    p = DEFAULT_POLICY["rss_peak_bytes"]  # rel 0.10 and abs 32 MiB
    mib = 2**20
    assert judge_number(p, KEY, 400 * mib, 405 * mib).status == "noise"  # +1%, +5 MiB
    assert judge_number(p, KEY, 100 * mib, 125 * mib).status == "noise"  # +25% but only 25 MiB
    assert judge_number(p, KEY, 400 * mib, 500 * mib).status == "regression"  # +25%, +100 MiB


def test_verdicts():
    p = DEFAULT_POLICY["verdict"]
    assert judge_verdict(p, "c", "pass", "fail").status == "regression"
    assert judge_verdict(p, "c", "xfail", "error").status == "regression"
    assert judge_verdict(p, "c", "xfail", "xfail").status == "unchanged"
    assert judge_verdict(p, "c", "pass", "xpass").status == "regression"
    assert judge_verdict(p, "c", "fail", "pass").status == "improvement"
    assert judge_verdict(p, "c", "pass", None).status == "missing"
    assert judge_verdict(p, "c", None, "fail").status == "regression"
    assert judge_verdict(p, "c", None, "pass").status == "new"
    assert judge_verdict(p, "c", "xfail", "pass").status == "unchanged"  # control: no failure either side
    skipped = judge_verdict(p, "c", "fail", "skip")
    assert skipped.status == "not_compared" and not skipped.fails_gate and "skipped" in skipped.message


@pytest.mark.parametrize("base", ["fail", "error", "xpass"])
@pytest.mark.parametrize("cur", ["fail", "error", "xpass"])
def test_a_case_failing_in_both_runs_still_fails_the_gate(base, cur):
    """A baseline written by hand or merged from elsewhere may hold a failing case; the same failure now
    was "unchanged" and passed the gate, though an error checked nothing."""
    f = judge_verdict(DEFAULT_POLICY["verdict"], "c", base, cur)
    assert f.status == "still_failing" and f.fails_gate
    assert f"still {cur}" in f.message and base in f.message


@pytest.mark.parametrize("cur", ["skip", "xfail"])
def test_a_pass_that_now_skips_or_xfails_is_lost_coverage_and_fails_the_gate(cur):
    p = DEFAULT_POLICY["verdict"]
    f = judge_verdict(p, "c", "pass", cur)
    assert f.status == "coverage_lost" and f.fails_gate and "--allow-coverage-loss" in f.message
    # Negative controls: an xfail that stays an xfail, and a skip that was a skip, lose nothing.
    assert not judge_verdict(p, "c", "xfail", "xfail").fails_gate
    assert not judge_verdict(p, "c", "skip", "skip").fails_gate


# ---------------------------------------------------------------------------------------------------------
# Timing basis and thresholds


def test_timing_basis_follows_the_environment():
    env = load(FIXTURES / "noise-a").environment
    assert timing_basis(env, env)[0] == "absolute"
    other = replace(env, cpu="Some Other CPU", cpu_count=64)
    basis, reason = timing_basis(env, other)
    assert basis == "ratio" and "Some Other CPU" in reason and "cpu_count" in reason
    assert timing_basis(env, other, "absolute")[0] == "absolute"
    assert timing_basis(env, env, "ratio")[0] == "ratio"


# /proc/cpuinfo of two 2-core VMs of one kind, both named "AMD EPYC": the first processor's block, as read.
EPYC_ZEN3 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\nstepping\t: 1\n"
EPYC_ZEN4 = EPYC_ZEN3.replace("model\t\t: 1\n", "model\t\t: 17\n")


def test_cpus_of_one_bare_name_but_different_models_compare_as_ratios():
    """A VM may name two CPU generations alike ("AMD EPYC", one 2.3x slower a case than the other): the
    family, model and stepping keep their absolute times apart."""
    from bench.results.environment import cpu_name

    zen3, zen4 = cpu_name(EPYC_ZEN3 + "\n" + EPYC_ZEN3), cpu_name(EPYC_ZEN4)
    assert zen3 == "AMD EPYC (cpu family 25, model 1, stepping 1)"  # the first block only, not doubled
    assert zen4 == "AMD EPYC (cpu family 25, model 17, stepping 1)"
    env = load(FIXTURES / "noise-a").environment
    basis, reason = timing_basis(replace(env, cpu=zen3), replace(env, cpu=zen4))
    assert basis == "ratio" and "model 17" in reason
    assert timing_basis(replace(env, cpu=zen4), replace(env, cpu=cpu_name(EPYC_ZEN4)))[0] == "absolute"
    # Where the file gives no family (another architecture, or no /proc), the name alone, as before.
    assert cpu_name("processor\t: 0\nmodel name\t: Neoverse-N1\n") == "Neoverse-N1"
    assert cpu_name("") != ""  # platform's name for the machine, never empty


def test_runs_of_different_jobs_compare_as_ratios():
    # Same machine, but one run had its cases beside each other (--jobs 2): a few per cent slower each.
    env = load(FIXTURES / "noise-a").environment
    assert timing_basis(env, env, jobs=(2, 2))[0] == "absolute"  # the control: equal jobs stay absolute
    basis, reason = timing_basis(env, env, jobs=(1, 2))
    assert basis == "ratio" and "jobs 1 vs 2" in reason
    basis, reason = timing_basis(replace(env, torch_threads=1), replace(env, torch_threads=2))
    assert basis == "ratio" and "torch_threads" in reason  # the difference is named, not an empty list
    base = load(FIXTURES / "noise-a")
    assert "jobs 1 vs 2" in compare(base, replace(base, jobs=2)).timing_reason


def test_threshold_config_overrides(tmp_path):
    cfg = tmp_path / "gate.toml"
    cfg.write_text(
        "[thresholds.latency_ms]\nrel = 0.5\nalpha = 0.05\n[thresholds.rss_peak_bytes]\ngated = false\n"
    )
    policy = load_policy(cfg)
    assert policy["latency_ms"].rel == 0.5 and policy["latency_ms"].alpha == 0.05
    assert policy["rss_peak_bytes"].gated is False
    assert policy["recompiles"] == DEFAULT_POLICY["recompiles"]
    flagged = with_flags(policy, latency_rel=2.0, memory_rel=0.3)
    assert flagged["latency_ms"].rel == 2.0 and flagged["compiled_over_eager"].rel == 2.0
    assert flagged["rss_peak_bytes"].rel == 0.3


@pytest.mark.parametrize(
    "text, field, fragment",
    [
        ("[thresholds.latency]\nrel = 1\n", "thresholds.latency", "unknown metric"),
        ("[thresholds.latency_ms]\nrelative = 1\n", "thresholds.latency_ms.relative", "unknown field"),
        ("[thresholds.latency_ms]\nrel = 'big'\n", "thresholds.latency_ms.rel", "expected a number"),
        ("[thresholds.latency_ms]\nrel = -1\n", "thresholds.latency_ms.rel", "must not be negative"),
        ("[thresholds.recompiles]\nalpha = 0.1\n", "thresholds.recompiles.alpha", "sampled metrics only"),
        ("[thresholds.latency_ms]\ngated = 1\n", "thresholds.latency_ms.gated", "true or false"),
        ("[limits]\nx = 1\n", "limits", "unknown table"),
    ],
)
def test_threshold_config_errors_name_file_and_field(tmp_path, text, field, fragment):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(BenchInputError) as exc:
        load_policy(cfg)
    assert str(cfg) in str(exc.value) and field in str(exc.value) and fragment in str(exc.value)


def test_threshold_config_not_toml(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[thresholds\n")
    with pytest.raises(BenchInputError, match="not a TOML file"):
        load_policy(cfg)
    with pytest.raises(BenchInputError, match="no such"):
        load_policy(tmp_path / "missing.toml")


def test_comparing_a_run_with_itself_finds_nothing():
    run = load(FIXTURES / "noise-a")
    c = compare(run, run)
    assert c.timing == "absolute"
    assert {f.status for f in c.findings} <= {"unchanged", "not_compared"}
    metrics = {f.metric for f in c.findings}
    assert {
        "verdict",
        "recompiles",
        "latency_ms",
        "rss_peak_bytes",
        "footprint_bytes",
        "switch_ms",
    } <= metrics


def test_zero_timing_samples_are_not_compared_instead_of_dividing_by_zero():
    """Found by the results-file fuzz test: a baseline of 0 ms samples made compare divide by zero."""
    f = judge_samples(DEFAULT_POLICY["latency_ms"], KEY, [0.0] * 6, BASE)
    assert f.status == "not_compared" and "0 ms" in f.message
