""" "Which to use" claims only what the records hold: a row is "matches" only where every case's output was
checked and the reference agreed with the math, an unverified pass says so wherever a pass is shown, and the
switch figures of a row are all of the same swaps. Each test changes one thing in a real run (the shipped
baseline, or the compat run whose references could not be built) and has the untouched run as its control."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest

from bench.report import answers, answers_view, html, markdown
from bench.results.failures import failure_line, failure_of
from bench.results.store import load
from bench.results.summary import count_badges, counts_line
from tests.conftest import REPO

BASELINE = REPO / "reports" / "baseline"
NOT_BUILT = REPO / "reports" / "compat" / "transformers-5.24.0_peft-0.21.2"  # every reference failed to build
PEFT = ("hotswap-alpha[fp32-aot_eager-peft]", "hotswap-peft[fp32-aot_eager-peft]")
UNVERIFIED = "math oracle: lora_bias adapters are not W + scaling * B @ A"


def _edit(results, case_ids, fn):
    return replace(results, cases=tuple(fn(c) if c.case_id in case_ids else c for c in results.cases))


def _lines(results) -> str:
    return "\n".join(answers_view.decision_line(a) for a in answers.advice(answers.choices(results)))


def _row(results, way: str):
    return next(c for c in answers.choices(results) if c.key.way == way)


def test_a_run_whose_references_were_never_built_recommends_nothing():
    """Every case errored: the reference could not be built, so no output was checked. The rows said
    "matches" and the headline named the fastest way and the cheapest switch. Control: the baseline."""
    results = load(NOT_BUILT / "results.json")
    lines = _lines(results)
    assert "fastest:" not in lines and "to switch adapters" not in lines
    assert "no choice here is right in every case" in lines
    cells = {c.key.way: answers_view.output_cell(c) for c in answers.choices(results)}
    assert cells == {"hotswap (peft)": "error", "hotswap (transformers)": "error/raised"}
    assert "fastest: aot_eager + hotswap (peft)" in _lines(load(BASELINE / "results.json"))


def test_a_case_in_error_is_never_expectation_not_met():
    """The transformers case errored and raised at its swap (step 5); its label was 'expectation not met',
    from the first step whose status was the verdict (step 2, no error text)."""
    case = next(
        c for c in load(NOT_BUILT / "results.json").cases if c.case_id.startswith("hotswap-transformers")
    )
    f = failure_of(case)
    assert (f.kind, f.step.index) == ("raised", 5)
    other = next(c for c in load(NOT_BUILT / "results.json").cases if c.case_id == PEFT[1])
    assert failure_of(other).kind == "error"  # nothing raised: the worker's reason says what
    assert "reference could not be built" in failure_line(other)


def _disagree(case):
    """The library reference disagrees with the math oracle at every output check: the subject still matches
    that reference (both share the bug)."""

    def step(s):
        outcomes = tuple(
            replace(o, held=False, status="fail", actual="0.31") if o.expectation == "oracles_agree" else o
            for o in s.outcomes
        )
        return replace(s, outcomes=outcomes, status="fail" if outcomes != s.outcomes else s.status)

    return replace(case, verdict="fail", steps=tuple(step(s) for s in case.steps))


def test_a_reference_the_math_disagrees_with_is_not_matches():
    """The peft row's references disagree with the math oracle: it read "matches" and was the fastest and the
    cheapest switch. Control: the baseline's peft row."""
    base = load(BASELINE / "results.json")
    bad = _edit(base, PEFT, _disagree)
    assert answers_view.output_cell(_row(bad, "hotswap (peft)")) == "oracles disagree"
    lines = _lines(bad)
    assert "fastest: aot_eager + no hotswap" in lines and "to switch adapters" not in lines
    assert "avoid aot_eager + hotswap (peft) (oracles disagree)" in lines
    assert answers_view.output_cell(_row(base, "hotswap (peft)")) == "matches"


def _unverified(case):
    step = replace(case.steps[3], unverified=UNVERIFIED, oracle_agreement=None)
    return replace(case, steps=(*case.steps[:3], step, *case.steps[4:]))


def test_an_unverified_pass_is_never_shown_as_a_plain_pass(tmp_path):
    """One passing case whose math oracle could not run: only the Markdown counts line said so. Control: the
    baseline says "unverified" nowhere."""
    base = load(BASELINE / "results.json")
    one = _edit(base, PEFT[:1], _unverified)
    assert counts_line(one).startswith("3 pass (1 unverified)")  # the site's index uses this line
    assert ("pass", "3 pass (1 unverified)", 1) in count_badges(one)
    cell = answers_view.output_cell(_row(one, "hotswap (peft)"))
    assert cell == "matches (unverified in 1 of 2 cases: one oracle)"
    assert "fastest: aot_eager + hotswap (peft) (unverified in 1 of 2 cases: one oracle)" in _lines(one)
    page = html.render(one, figures={})
    assert 'class="v-pass v-unverified">3 pass (1 unverified)<' in page
    assert "pass (unverified)" in page and "pass: unverified" in page and UNVERIFIED in page
    md = markdown.render(one)
    assert (
        "pass (unverified)" in md
        and f"**pass: unverified**: unverified: step 4 (forward): {UNVERIFIED}" in md
    )
    summary = answers_view.summary_lines(one)
    assert f"- `{PEFT[0]}` pass (unverified): step 4 (forward): {UNVERIFIED}" in summary
    for text in (
        html.render(base, figures={}),
        markdown.render(base),
        "\n".join(answers_view.summary_lines(base)),
    ):
        assert "(unverified" not in text and "pass: unverified" not in text and "unverified in" not in text


def test_the_switch_figures_of_a_row_are_of_the_same_swaps():
    """One of the peft row's two swaps wrong and 1000 ms, the other right: the row said the median of both
    (503 ms) 'per switch' beside the right one's reload ratio. Control: with both right, both are pooled."""
    base = load(BASELINE / "results.json")

    def wrong_slow_swap(case):
        s = case.steps[4]
        wrong = replace(s, output=replace(s.output, matches=False, max_abs_diff=0.3), op_time_ms=1000.0)
        return replace(case, steps=(*case.steps[:4], wrong, *case.steps[5:]))

    mixed = _edit(base, PEFT[:1], wrong_slow_swap)
    row, right = _row(mixed, "hotswap (peft)"), _row(base, "hotswap (peft)")
    assert row.switch_n == 1 and row.switch_ms < 100 and row.switch_over_reload is not None
    assert row.switch_ms == answers._median([answers.switch_ms(mixed.cases[2].steps[4])])
    reload_ms = right.switch_ms / right.switch_over_reload  # the same reload in both runs
    assert right.switch_n == 2 and row.switch_over_reload == pytest.approx(row.switch_ms / reload_ms)


def test_a_row_with_too_few_calls_for_an_interval_says_how_many_it_has():
    """Three timed calls: no interval (5 needed), and the n column said 0."""
    base = load(BASELINE / "results.json")
    case = next(c for c in base.cases if c.case_id == "recompile-control[fp32-aot_eager]")

    def three_calls(s):
        if s.timing is None:
            return s
        return replace(s, timing=replace(s.timing, n=3, samples_ms=tuple(s.timing.samples_ms[:3])))

    few = replace(base, cases=(replace(case, steps=tuple(three_calls(s) for s in case.steps)),))
    (row,) = answers.choices(few)
    assert row.latency is None and answers_view.row(row)[4] == "3 (too few for an interval)"
    (full,) = answers.choices(replace(base, cases=(case,)))
    assert answers_view.row(full)[4] == str(full.latency.n)  # control: with its calls, the interval's n


def test_a_skipped_or_unfinished_case_keeps_its_reason_in_the_summary():
    base = load(BASELINE / "results.json")
    case = dataclasses.replace(
        base.cases[0], verdict="skip", reason="bf16 not supported on this CPU", steps=()
    )
    assert failure_line(case) == f"- `{case.case_id}` skip: bf16 not supported on this CPU"
    assert failure_line(base.cases[0]) == ""  # control: a plain pass has no line


def test_markup_in_results_text_shows_as_written_in_the_markdown(tmp_path):
    """A reason holding `<class 'torch.Tensor'>` vanished where report.md or summary.md is rendered (a GitHub
    step summary), a `<script>` became markup, and a newline in a reason broke summary.md's table. Control:
    report.html escaped them already, and the same text without markup is unchanged."""
    from bench.results.summary import summary_markdown

    base = load(BASELINE / "results.json")
    reason = (
        "raised TypeError: expected <class 'torch.Tensor'> <script>alert(1)</script>\n# not a heading | x"
    )
    odd = _edit(
        base, ("recompile-control[fp32-aot_eager]",), lambda c: replace(c, verdict="error", reason=reason)
    )
    md, summary = markdown.render(odd), summary_markdown(odd, answers_view.summary_lines(odd))
    for text in (md, summary):
        assert "<script>" not in text and "<class" not in text
        assert "&lt;class 'torch.Tensor'>" in text
        assert "\n# not a heading" not in text
    row = next(line for line in summary.splitlines() if line.startswith("| `recompile-control"))
    assert row.endswith("&lt;/script> # not a heading \\| x |")
    assert "&lt;script&gt;" in html.render(odd, figures={})
    plain = _edit(
        base, ("recompile-control[fp32-aot_eager]",), lambda c: replace(c, verdict="error", reason="x")
    )
    assert "| error | - |" in summary_markdown(plain) or "error: x" in "\n".join(
        answers_view.summary_lines(plain)
    )


def test_a_case_of_an_unknown_built_in_model_gets_no_script_and_the_report_is_written(tmp_path):
    """A results file naming a built-in model this peft-bench does not have (another version, or edited) made
    `report` die with a KeyError traceback and write nothing. Control: the baseline's failing cases get
    their scripts."""
    from bench.report.repro.script import write_repros

    base = load(BASELINE / "results.json")

    def other_model(c):
        scenario = {**c.case["scenario"], "model": "builtin:not-a-model"}
        return replace(c, case={**c.case, "scenario": scenario})

    odd = replace(base, cases=tuple(other_model(c) for c in base.cases))
    repros = write_repros(odd, tmp_path / "odd")
    assert repros and all(r.path is None for r in repros.values())
    assert {r.note for r in repros.values()} == {
        "no reproduction script: builtin:not-a-model is not a built-in model of this peft-bench"
    }
    assert all(r.path for r in write_repros(base, tmp_path / "base").values())


def test_compare_and_gate_see_a_pass_that_lost_its_second_oracle(tmp_path, capsys):
    """Two passes both oracles verified became unverified passes: compare said "Nothing changed." and the gate
    passed. Saved and read back, so the columnar copy's judged view is what is compared. Control: the
    baseline against itself."""
    from bench.cli.main import main
    from bench.results.store import save

    base = load(BASELINE / "results.json")
    save(tmp_path / "base", base)
    save(tmp_path / "cur", _edit(base, PEFT, _unverified))
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "cur")]) == 0
    out = capsys.readouterr().out
    assert out.count("coverage_lost") >= 2 and "now unverified" in out and "Nothing changed" not in out
    gate = ["gate", str(tmp_path / "cur"), "--baseline", str(tmp_path / "base" / "results.json")]
    assert main(gate) == 1
    assert main([*gate, "--allow-coverage-loss"]) == 0
    assert main(["gate", str(tmp_path / "base"), "--baseline", str(tmp_path / "base" / "results.json")]) == 0
