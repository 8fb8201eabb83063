"""The gate on real results: two runs of the same code pass; each planted regression fails, with a message
that names the case, the metric, both values and the command that updates the baseline.

noise-a and noise-b are two real runs (`python -m bench run`) of the same scenarios on the same machine,
single-threaded, as `nox -s gate` runs them. Every planted regression is built from noise-a by changing one
figure, so a failure can only come from what was planted.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bench.cli.main import main
from bench.judge.compare import compare
from bench.judge.gate import decide, update_command
from bench.judge.thresholds import load_policy
from bench.report.comparison import comparison_markdown
from bench.results.measures import TimingStats
from bench.results.records import Results
from bench.results.store import load
from bench.spec.codec import to_dict
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "results"
CPU_THRESHOLDS = REPO / "reports" / "baseline" / "gate.toml"
SWAP_CASE = "hotswap-peft[fp32-aot_eager-peft]"  # steps: 4 forward, 5 hotswap, 6 forward
MiB = 2**20


@pytest.fixture(scope="module")
def noise_a() -> Results:
    return load(FIXTURES / "noise-a")


@pytest.fixture(scope="module")
def noise_b() -> Results:
    return load(FIXTURES / "noise-b")


@pytest.fixture(scope="module")
def cpu_policy():
    return load_policy(CPU_THRESHOLDS)


def _gate(baseline, current, policy, **kw):
    c = compare(baseline, current, policy, timing=kw.pop("timing", "auto"))
    return c, decide(c, update_command("CURRENT", "BASELINE"), **kw)


def _edit_case(results: Results, case_id: str, fn) -> Results:
    assert any(c.case_id == case_id for c in results.cases)
    return replace(results, cases=tuple(fn(c) if c.case_id == case_id else c for c in results.cases))


def _edit_step(results: Results, case_id: str, index: int, fn) -> Results:
    return _edit_case(
        results, case_id, lambda c: replace(c, steps=tuple(fn(s) if s.index == index else s for s in c.steps))
    )


def _slower(step, factor: float):
    return replace(step, timing=TimingStats.from_samples([x * factor for x in step.timing.samples_ms]))


def _other_machine(results: Results) -> Results:
    return replace(results, environment=replace(results.environment, cpu="Other CPU 9000", cpu_count=32))


# ---------------------------------------------------------------------------------------------------------
# Noise passes


@pytest.mark.parametrize("timing", ["auto", "ratio"])
def test_two_runs_of_the_same_code_pass_both_ways(noise_a, noise_b, cpu_policy, timing):
    for base, cur in ((noise_a, noise_b), (noise_b, noise_a)):
        c, g = _gate(base, cur, cpu_policy, timing=timing)
        assert g.passed, g.messages
        assert c.timing == ("absolute" if timing == "auto" else "ratio")
        assert any(f.metric in ("latency_ms", "latency_over_first") for f in c.findings)  # latency was judged


def test_uniformly_slower_machine_passes_on_ratios(noise_a, cpu_policy):
    """Another machine, 1.7x slower everywhere: absolute times would differ, ratios within the run do not."""
    slow = _other_machine(noise_a)
    for case in noise_a.cases:
        for s in case.steps:
            if s.timing:
                slow = _edit_step(slow, case.case_id, s.index, lambda st: _slower(st, 1.7))
    c, g = _gate(noise_a, slow, cpu_policy)
    assert (
        c.timing == "ratio"
        and "environments differ" in c.timing_reason
        and "Other CPU 9000" in c.timing_reason
    )
    assert g.passed, g.messages
    assert not any(f.metric == "latency_ms" for f in c.findings)  # absolute times were not compared
    # Process memory is machine-specific: not compared across machines, and the finding says why.
    rss = [f for f in c.findings if f.metric == "rss_peak_bytes"]
    assert rss and all(f.status == "not_compared" and "environments differ" in f.message for f in rss)


# ---------------------------------------------------------------------------------------------------------
# Planted regressions fail


def _only_failure(g, metric: str):
    assert not g.passed
    assert [f.metric for f in g.failures] == [metric], g.messages
    return g.failures[0], g.messages[0]


def test_planted_verdict_regression(noise_a, cpu_policy):
    bad = _edit_case(noise_a, SWAP_CASE, lambda c: replace(c, verdict="fail", reason="step 5: planted"))
    _, g = _gate(noise_a, bad, cpu_policy)
    f, msg = _only_failure(g, "verdict")
    assert f.case_id == SWAP_CASE and "baseline pass" in msg and "current fail" in msg
    assert g.update_command == "peft-bench gate CURRENT --baseline BASELINE --update-baseline"
    # The closing line does not offer the update: --update-baseline refuses a run with a failing case.
    assert g.advice.startswith("1 case(s) fail, error or xpass in this run: fix them")
    assert "update the baseline:" not in g.advice


def test_planted_recompile(noise_a, cpu_policy):
    bad = _edit_step(
        noise_a,
        SWAP_CASE,
        5,
        lambda s: replace(s, compile=replace(s.compile, recompiles=1, frame_compiles=1)),
    )
    _, g = _gate(noise_a, bad, cpu_policy)
    f, msg = _only_failure(g, "recompiles")
    assert f.step == 5 and f"{SWAP_CASE} step 5 (load_adapter): recompiles: baseline 0, current 1" in msg


def test_planted_graph_breaks(noise_a, cpu_policy):
    bad = _edit_step(noise_a, SWAP_CASE, 6, lambda s: replace(s, compile=replace(s.compile, graph_breaks=2)))
    f, msg = _only_failure(_gate(noise_a, bad, cpu_policy)[1], "graph_breaks")
    assert "baseline 0, current 2" in msg


def test_planted_memory_growth(noise_a, cpu_policy):
    def fatter(s):
        m = s.memory
        return replace(s, memory=replace(m, rss_peak_bytes=m.rss_peak_bytes + 256 * MiB))

    bad = noise_a
    for s in next(c for c in noise_a.cases if c.case_id == SWAP_CASE).steps:
        bad = _edit_step(bad, SWAP_CASE, s.index, fatter)
    f, msg = _only_failure(_gate(noise_a, bad, cpu_policy)[1], "rss_peak_bytes")
    assert "MiB" in msg and f.current - f.baseline == 256 * MiB


def test_small_memory_change_passes(noise_a, cpu_policy):
    bad = _edit_step(
        noise_a,
        SWAP_CASE,
        4,
        lambda s: replace(s, memory=replace(s.memory, rss_peak_bytes=s.memory.rss_peak_bytes + 4 * MiB)),
    )
    assert _gate(noise_a, bad, cpu_policy)[1].passed


def test_planted_footprint_growth(noise_a, cpu_policy):
    bad = _edit_case(
        noise_a,
        SWAP_CASE,
        lambda c: replace(
            c, footprint=replace(c.footprint, memory_footprint_bytes=c.footprint.memory_footprint_bytes * 2)
        ),
    )
    _only_failure(_gate(noise_a, bad, cpu_policy)[1], "footprint_bytes")


def test_planted_latency_regression(noise_a, cpu_policy):
    bad = _edit_step(noise_a, SWAP_CASE, 6, lambda s: _slower(s, 3.0))
    f, msg = _only_failure(_gate(noise_a, bad, cpu_policy)[1], "latency_ms")
    assert f.p_value < 0.01 and f.change_rel == pytest.approx(2.0, rel=0.01)
    assert "U test" in msg and "ms" in msg


def test_planted_latency_regression_across_machines(noise_a, cpu_policy):
    bad = _edit_step(_other_machine(noise_a), SWAP_CASE, 6, lambda s: _slower(s, 3.0))
    c, g = _gate(noise_a, bad, cpu_policy)
    f, msg = _only_failure(g, "latency_over_first")
    assert c.timing == "ratio" and f.unit == "ratio" and "x" in msg
    assert "ratios measured within each run" in g.timing


def _with_compiled_reload(results: Results) -> Results:
    """SWAP_CASE plus a plain load into the compiled model (its step 2 again, after the compile, with a
    first call 20x as long for the recompile): what x reload is measured against."""

    def add(c):
        load = next(s for s in c.steps if s.index == 2)
        reload = replace(load, index=7, first_call_ms=load.first_call_ms * 20)
        return replace(c, steps=(*c.steps, reload))

    return _edit_case(results, SWAP_CASE, add)


def test_switch_over_reload_needs_a_reload_into_the_compiled_model(noise_a):
    """The fixture's only plain load ran before the compile (eager): no ratio against it."""
    from bench.judge.figures import reload_step, switch_over_reload

    case = next(c for c in noise_a.cases if c.case_id == SWAP_CASE)
    swap = next(s for s in case.steps if s.index == 5)
    assert reload_step(case) is None and switch_over_reload(case, swap) is None
    case = next(c for c in _with_compiled_reload(noise_a).cases if c.case_id == SWAP_CASE)
    assert reload_step(case).index == 7 and switch_over_reload(case, swap) is not None
    wrong = replace(swap, output=replace(swap.output, matches=False))
    assert switch_over_reload(case, wrong) is None  # a wrong answer is never a speed-up


def test_planted_switch_cost_across_machines(noise_a, cpu_policy):
    """A hotswap that now costs as much as reloading and recompiling: its first call 50x slower."""
    noise_a = _with_compiled_reload(noise_a)
    bad = _edit_step(
        _other_machine(noise_a), SWAP_CASE, 5, lambda s: replace(s, first_call_ms=s.first_call_ms * 50)
    )
    f, _ = _only_failure(_gate(noise_a, bad, cpu_policy)[1], "switch_over_reload")
    assert f.step == 5 and f.current > 3 * f.baseline


def test_gate_cli_on_a_partial_run_suggests_allow_missing(noise_a, tmp_path, capsys):
    """A run of a few of the baseline's cases (a shard, a -k): the advice is --allow-missing, never
    --update-baseline, which would make those few cases the whole baseline (issue 32)."""
    baseline = _write(noise_a, tmp_path / "base") / "results.json"
    fewer = replace(noise_a, cases=noise_a.cases[:2])
    current = _write(fewer, tmp_path / "cur")
    summary = tmp_path / "s.md"
    assert main(["gate", str(current), "--baseline", str(baseline), "--summary", str(summary)]) == 1
    out = capsys.readouterr().out
    assert "--allow-missing" in out and "--update-baseline" not in out, out
    md = summary.read_text()
    assert "--allow-missing" in md and "--update-baseline" not in md
    assert main(["gate", str(current), "--baseline", str(baseline), "--allow-missing"]) == 0


def test_missing_case_fails_unless_allowed(noise_a, cpu_policy):
    fewer = replace(noise_a, cases=tuple(c for c in noise_a.cases if c.case_id != SWAP_CASE))
    g = _gate(noise_a, fewer, cpu_policy)[1]
    assert not g.passed and g.failures[0].status == "missing"
    assert _gate(noise_a, fewer, cpu_policy, allow_missing=True)[1].passed


def _unfinished(c):
    return replace(c, verdict="not_run", reason="interrupted before this case ran", steps=())


def test_cases_a_run_did_not_finish_fail_even_with_allow_missing(noise_a, cpu_policy):
    """An interrupted run passed the gate with --allow-missing, though its cases never ran; and its unfinished
    cases that are not in the baseline were counted as baseline cases that did not run. Control: a case
    absent from the run (a shard, a -k) is still let through by --allow-missing."""
    absent = noise_a.cases[0].case_id  # in the baseline, left out of this run
    assert absent != SWAP_CASE
    new = replace(_unfinished(noise_a.cases[0]), case_id="only-here[fp32-none]")
    stopped = _edit_case(noise_a, SWAP_CASE, _unfinished)
    stopped = replace(stopped, cases=(*stopped.cases[1:], new), interrupted=True)
    g = _gate(noise_a, stopped, cpu_policy, allow_missing=True)[1]
    assert not g.passed
    assert {f.case_id for f in g.failures if f.metric == "verdict"} == {SWAP_CASE, new.case_id}
    assert g.advice.startswith("2 case(s) of this run did not finish") and "--resume" in g.advice
    assert "1 baseline case(s) did not run here" in _gate(noise_a, stopped, cpu_policy)[1].advice
    assert absent not in {f.case_id for f in g.failures}  # allowed: absent, not unfinished


def test_a_case_erroring_in_baseline_and_run_fails_the_gate(noise_a, cpu_policy):
    """The same errored case on both sides passed the gate (its verdict "unchanged"). Control: the same two
    runs with the case passing on both sides pass."""

    def errored(c):
        return replace(c, verdict="error", reason="worker crashed", steps=())

    broken = _edit_case(noise_a, SWAP_CASE, errored)
    g = _gate(broken, broken, cpu_policy)[1]
    assert not g.passed
    assert [(f.case_id, f.status) for f in g.failures] == [(SWAP_CASE, "still_failing")]
    assert g.advice.startswith("1 case(s) fail, error or xpass in this run (1 as in the baseline)")
    assert "update the baseline:" not in g.advice  # --update-baseline would refuse this run
    assert _gate(noise_a, noise_a, cpu_policy)[1].passed


# ---------------------------------------------------------------------------------------------------------
# The command line


def _write(results: Results, folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(to_dict(results)))
    return folder


def test_gate_cli_fails_with_the_update_command(noise_a, tmp_path, capsys, monkeypatch):
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    baseline = _write(noise_a, tmp_path / "base")
    (baseline / "gate.toml").write_text(CPU_THRESHOLDS.read_text())  # picked up beside the baseline
    bad = _edit_step(noise_a, SWAP_CASE, 5, lambda s: replace(s, compile=replace(s.compile, recompiles=2)))
    current = _write(bad, tmp_path / "cur")
    rc = main(["gate", str(current), "--baseline", str(baseline / "results.json")])
    out = capsys.readouterr().out
    assert rc == 1
    assert f"{SWAP_CASE} step 5 (load_adapter): recompiles: baseline 0, current 2" in out
    assert f"peft-bench gate {current} --baseline {baseline / 'results.json'} --update-baseline" in out
    assert f"thresholds: defaults with {baseline / 'gate.toml'}" in out
    md = summary.read_text()
    assert md.startswith("## peft-bench gate: FAILED") and "| regression |" in md


def test_gate_cli_passes_on_noise_and_updates_the_baseline(noise_a, noise_b, tmp_path, capsys):
    baseline = _write(noise_a, tmp_path / "base") / "results.json"
    current = _write(noise_b, tmp_path / "cur")
    cfg = ["--config", str(CPU_THRESHOLDS)]
    assert main(["gate", str(current), "--baseline", str(baseline), *cfg]) == 0
    assert "peft-bench gate: PASS" in capsys.readouterr().out
    assert main(["gate", str(current), "--baseline", str(baseline), "--update-baseline"]) == 0
    assert load(baseline).created_at == noise_b.created_at


def test_gate_cli_refuses_a_failing_run_as_baseline(noise_a, tmp_path, capsys):
    bad = _edit_case(noise_a, SWAP_CASE, lambda c: replace(c, verdict="error", reason="planted"))
    current = _write(bad, tmp_path / "cur")
    assert main(["gate", str(current), "--baseline", str(tmp_path / "b.json"), "--update-baseline"]) == 2
    assert "a baseline records a healthy run" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


def test_gate_cli_input_errors(noise_a, tmp_path, capsys):
    current = _write(noise_a, tmp_path / "cur")
    assert main(["gate", str(current), "--baseline", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert "none.json" in err and "--update-baseline" in err and "Traceback" not in err
    bad_cfg = tmp_path / "t.toml"
    bad_cfg.write_text("[thresholds.latency_ms]\nrel = 'x'\n")
    assert (
        main(["gate", str(current), "--baseline", str(current / "results.json"), "--config", str(bad_cfg)])
        == 2
    )
    err = capsys.readouterr().err
    assert str(bad_cfg) in err and "thresholds.latency_ms.rel" in err


def test_compare_cli_markdown(noise_a, tmp_path, capsys):
    base = _write(noise_a, tmp_path / "a")
    cur = _write(_edit_step(noise_a, SWAP_CASE, 6, lambda s: _slower(s, 3.0)), tmp_path / "b")
    assert main(["compare", str(base), str(cur), "--format", "md"]) == 0  # compare reports; the gate decides
    out = capsys.readouterr().out
    assert (
        out.startswith("## peft-bench compare")
        and "| regression | `hotswap-peft[fp32-aot_eager-peft]` | 6 (forward) | latency_ms" in out
    )
    assert "absolute times: both runs on the same kind of machine" in out


@pytest.mark.parametrize("verdict", ["skip", "xfail"])
def test_lost_coverage_fails_unless_allowed(noise_a, cpu_policy, verdict):
    """A baseline pass that now skips (a precision that stopped running) or xfails (a marker added to hide
    a bug) checks less than before: the gate says so, and only --allow-coverage-loss lets it through."""
    current = _edit_case(noise_a, SWAP_CASE, lambda c: replace(c, verdict=verdict, reason="planted"))
    _, g = _gate(noise_a, current, cpu_policy)
    assert not g.passed
    assert [f.status for f in g.failures] == ["coverage_lost"]
    _, allowed = _gate(noise_a, current, cpu_policy, allow_coverage_loss=True)
    assert allowed.passed and (allowed.coverage_allowed, allowed.missing_allowed) == (1, 0)
    md = comparison_markdown(_gate(noise_a, current, cpu_policy)[0], gate=allowed)
    assert "1 case(s) that check less than in the baseline were allowed (--allow-coverage-loss)" in md
    assert "--allow-missing" not in md  # it was not missing, and --allow-missing was not given


def test_a_run_of_no_case_is_refused_as_a_baseline(noise_a, tmp_path, capsys):
    """A results file with no case was taken as the baseline, and every later run would pass against it.
    Control: the same file with its cases updates the baseline (test_gate_cli_passes_on_noise_...)."""
    baseline = tmp_path / "base.json"
    empty = _write(replace(noise_a, cases=()), tmp_path / "empty")
    assert main(["gate", str(empty), "--baseline", str(baseline), "--update-baseline"]) == 2
    assert "holds no case" in capsys.readouterr().err and not baseline.exists()
