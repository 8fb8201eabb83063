"""The binary search with skip, and the bad-when criteria on real results files (the compat runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bisect import criteria, versions
from bench.bisect.search import BAD, GOOD, UNTESTABLE, bisect
from bench.errors import BenchInputError
from bench.results.store import load

COMPAT = Path(__file__).resolve().parents[2] / "reports" / "compat"
ALPHA_TRANSFORMERS = "hotswap-alpha[fp32-aot_eager-transformers]"


def oracle(states: dict[str, str]):
    calls = []

    def probe(v):
        calls.append(v)
        return states[v], f"{v} is {states[v]}"

    return probe, calls


def names(n):
    return [f"v{i}" for i in range(n)]


@pytest.mark.parametrize("n", [2, 3, 5, 8, 17, 64])
def test_finds_every_possible_first_bad(n):
    vs = names(n)
    for first_bad in range(1, n):
        probe, calls = oracle({v: GOOD if i < first_bad else BAD for i, v in enumerate(vs)})
        answer = bisect(vs, probe)
        assert (answer.kind, answer.first_bad, answer.last_good) == (
            "found",
            vs[first_bad],
            vs[first_bad - 1],
        )
        assert len(calls) == len(set(calls)) <= 2 + (n - 2).bit_length()  # logarithmic, never twice


def test_untestable_is_skipped_and_the_nearest_is_probed_instead():
    vs = names(9)
    states = {v: GOOD if i < 6 else BAD for i, v in enumerate(vs)}
    states["v4"] = UNTESTABLE  # the middle
    probe, calls = oracle(states)
    answer = bisect(vs, probe)
    assert (answer.kind, answer.first_bad, answer.last_good) == ("found", "v6", "v5")
    assert calls[:4] == ["v0", "v8", "v4", "v3"]
    assert [p.state for p in answer.probes if p.version == "v4"] == [UNTESTABLE]
    assert answer.skipped_between == ()


def test_untestable_next_to_the_break_makes_the_answer_ambiguous():
    vs = names(7)
    states = {"v0": GOOD, "v1": GOOD, "v2": GOOD, "v3": UNTESTABLE, "v4": BAD, "v5": BAD, "v6": BAD}
    answer = bisect(vs, oracle(states)[0])
    assert (answer.kind, answer.last_good, answer.first_bad, answer.skipped_between) == (
        "ambiguous",
        "v2",
        "v4",
        ("v3",),
    )


def test_untestable_bad_end_walks_down_to_the_nearest_testable():
    vs = names(6)
    states = {"v0": GOOD, "v1": GOOD, "v2": BAD, "v3": BAD, "v4": UNTESTABLE, "v5": UNTESTABLE}
    answer = bisect(vs, oracle(states)[0])
    assert (answer.kind, answer.first_bad, answer.last_good) == ("found", "v2", "v1")


def test_good_end_that_is_bad_and_range_without_bad():
    probe, calls = oracle({"v0": BAD, "v1": BAD, "v2": BAD})
    assert bisect(names(3), probe).kind == "good_is_bad" and calls == ["v0"]
    answer = bisect(names(3), oracle({"v0": GOOD, "v1": GOOD, "v2": UNTESTABLE})[0])
    assert (answer.kind, answer.last_good) == ("no_bad", "v1")


def test_probe_returning_garbage_is_an_error():
    with pytest.raises(ValueError, match="not one of"):
        bisect(names(2), lambda v: ("maybe", ""))
    with pytest.raises(ValueError, match="at least"):
        bisect(["v0"], lambda v: (GOOD, ""))


def test_releases_between_in_release_order_not_text_order():
    listed = versions.parse_pip_index(
        "transformers (5.25.0)\nAvailable versions: 5.25.0, 5.24.0, 5.9.0, 5.23.0, "
        "5.22.0rc1, 5.20.2, 5.20.0, 5.19.0\n"
    )
    assert versions.between(listed, "5.9.0", "5.24.0") == [
        "5.9.0",
        "5.19.0",
        "5.20.0",
        "5.20.2",
        "5.23.0",
        "5.24.0",
    ]
    with pytest.raises(BenchInputError, match="--good 5.21.0 is not a published release"):
        versions.between(listed, "5.21.0", "5.24.0")
    with pytest.raises(BenchInputError, match="must be an older release"):
        versions.between(listed, "5.24.0", "5.20.0")


def results(combo: str):
    return load(COMPAT / combo / "results.json")


def test_expectation_criterion_sees_through_known_failure():
    # transformers 5.23: the alpha hotswap's matches_reference fails, the scenario marks it xfail
    res = results("transformers-5.23.0_peft-0.21.2")
    case = next(c for c in res.cases if c.case_id == ALPHA_TRANSFORMERS)
    assert case.verdict == "xfail"
    state, reason = criteria.judge(
        criteria.parse("expectation:matches_reference"), res, (ALPHA_TRANSFORMERS,)
    )
    assert state == BAD and "step 5 (load_adapter)" in reason and "known_failure" in reason
    state, reason = criteria.judge(criteria.parse("expectation:matches_reference"), res, ("aot_eager-peft]",))
    assert state == GOOD, reason
    # the verdict criterion without xfail calls the same run good: the reason to read raw outcomes
    assert criteria.judge(criteria.parse("verdict:fail,error"), res, (ALPHA_TRANSFORMERS,))[0] == GOOD


def test_case_that_never_reaches_the_expectation_is_untestable():
    res = results("transformers-5.24.0_peft-0.21.2")  # refuses peft 0.21 at the first load_adapter
    state, reason = criteria.judge(
        criteria.parse("expectation:matches_reference"), res, (ALPHA_TRANSFORMERS,)
    )
    assert state == UNTESTABLE and "PEFT you are using is not compatible" in reason
    assert criteria.judge(criteria.parse("verdict:error"), res, (ALPHA_TRANSFORMERS,))[0] == BAD
    assert criteria.judge(criteria.parse("verdict:error"), res, ("no-such-case",))[0] == UNTESTABLE


def test_metric_and_gate_criteria():
    res = results("transformers-5.23.0_peft-0.21.2")
    assert criteria.judge(criteria.parse("metric:recompiles>0"), res)[0] == GOOD
    state, reason = criteria.judge(
        criteria.parse("metric:output_max_abs_diff>0.1"), res, (ALPHA_TRANSFORMERS,)
    )
    assert state == BAD and "output_max_abs_diff" in reason
    assert criteria.judge(criteria.parse("metric:no_such_metric>1"), res)[0] == UNTESTABLE
    good_end = results("transformers-5.23.0_peft-0.20.0")
    assert criteria.judge(criteria.parse("gate"), res, (), good_end)[0] == GOOD
    broken = results("transformers-5.23.0_peft-0.18.1")  # every case fails: the gate's verdict rule
    state, reason = criteria.judge(criteria.parse("gate"), broken, (), good_end)
    assert state == BAD and "verdict" in reason


@pytest.mark.parametrize(
    "text", ["verdict:", "verdict:broken", "expectation:", "metric:x=3", "metric:x>y", "wat"]
)
def test_bad_criterion_text_is_input_error(text):
    with pytest.raises(BenchInputError, match="--bad-when"):
        criteria.parse(text)


@pytest.mark.parametrize(
    "args, message",
    [
        (["scenarios/hotswap_alpha.toml", "--bad-when", "wat"], "--bad-when"),
        (["no/such.toml"], "no such scenario"),
        (["scenarios/hotswap_alpha.toml", "--package", "numpy"], "--package 'numpy'"),
        (["scenarios/hotswap_alpha.toml", "--constraints", "no-such.txt"], "no such constraints"),
    ],
)
def test_cli_bad_input_is_exit_2_with_a_message(args, message, capsys, monkeypatch):
    from bench.cli.main import main

    monkeypatch.chdir(COMPAT.parent.parent)
    base = ["bisect", "--package", "transformers", "--good", "5.20.0", "--bad", "5.24.0"]
    assert main([*base, *args]) == 2
    assert message in capsys.readouterr().err


def test_the_import_is_in_doubt_only_where_a_failed_import_could_explain_the_run():
    """The probe skips its own `import module` for what every case imports (the run would show a failed
    import as error or skip verdicts) and tries it when the run could hide one."""
    from dataclasses import replace

    from bench.bisect.probe import import_in_doubt, run_imports

    results = load(Path(__file__).parents[1] / "fixtures" / "results" / "failing")
    verdicts = {c.verdict for c in results.cases}
    assert run_imports("peft") and run_imports("transformers.models") and not run_imports("adapterlib")
    assert import_in_doubt("peft", None)  # no results at all
    assert "error" in verdicts and import_in_doubt("peft", results)
    ran = replace(results, cases=tuple(c for c in results.cases if c.verdict in ("pass", "fail", "xfail")))
    assert ran.cases and not import_in_doubt("peft", ran)
    skipped = replace(ran, cases=(replace(ran.cases[0], verdict="skip"),))
    assert import_in_doubt("torch", skipped)
    assert not import_in_doubt("adapterlib", None)  # imported before the run instead
