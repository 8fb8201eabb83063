"""What a reader of the report decides on, and each thing that misled one (issue 29, parts 1 and 2).

Fixtures are real runs: tests/fixtures/results/failing (the silent wrong alpha hotswap, a recompile, a
timeout), reports/baseline (a swap that raised, a plain load into the compiled model), reports/serving-cpu
(transformers' hotswap answering 27 of 48 requests wrongly), and a fresh run made here of
scenarios/hotswap_transformers.toml and scenarios/forward_latency.toml (for a case log and a measured
adapter-disabled step).
"""

from __future__ import annotations

import os
import random
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bench.report import (
    answers,
    answers_view,
    caselogs,
    contents,
    data,
    flags,
    html,
    markdown,
    memory_data,
    plots,
    plots_memory,
)
from bench.report.bootstrap import pooled_median, ratio_of_medians
from bench.report.build import write_reports
from bench.report.figure import MIN_CONTRAST, WHITE, contrast
from bench.results.store import load
from bench.results.summary import summary_markdown
from tests.conftest import REPO

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

FAILING = REPO / "tests" / "fixtures" / "results" / "failing"
BASELINE = REPO / "reports" / "baseline"
SERVING = REPO / "reports" / "serving-cpu"
TRAIN = REPO / "tests" / "fixtures" / "results" / "train"
ALPHA_TF = "hotswap-alpha[fp32-aot_eager-transformers]"
ALPHA_PEFT = "hotswap-alpha[fp32-aot_eager-peft]"
RAISED = "hotswap-transformers[fp32-aot_eager]"
SERVE_TF = "serving[fp32-none-hotswap-transformers]"


@pytest.fixture(scope="module")
def failing():
    return load(FAILING)


@pytest.fixture(scope="module")
def baseline():
    return load(BASELINE)


@pytest.fixture(scope="module")
def serving():
    return load(SERVING)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A real run: the rank-mismatch swap that raises (transformers prints its report, then raises "look at the
    above report") and the forward-latency case with its adapter-disabled forward."""
    out = tmp_path_factory.mktemp("fresh") / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["scenarios/hotswap_transformers.toml", "scenarios/forward_latency.toml", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, load(out)


def test_latency_table_flags_wrong_serving_responses(serving):
    """The serve step has no `output` record; its wrong responses are what makes its times a wrong answer."""
    rows = {r[0]: r[-1] for r in markdown_rows(serving, "latency")}
    assert rows[SERVE_TF].startswith(flags.WRONG) and "27 of 48 responses wrong" in rows[SERVE_TF]
    assert rows["serving[fp32-none-hotswap-peft]"] == "matches"  # the control


def markdown_rows(results, key):
    section = next(s for s in contents.all_sections(results) if s.key == key)
    return section.tables[0].rows


def test_a_step_nobody_checked_is_not_called_matching(failing):
    case = next(c for c in failing.cases if c.case_id == ALPHA_PEFT)
    compile_step = next(s for s in case.steps if s.output is None and s.serving is None)
    assert flags.output_label(compile_step) == "not checked"
    assert flags.output_label(replace(compile_step, output=case.steps[1].output)) == "matches"


def test_timing_and_switch_plots_mark_wrong_output(failing):
    wrong = {(c.case_id, s.index): w for c in failing.cases for s in c.steps if (w := flags.wrong_output(s))}
    assert (ALPHA_TF, 6) in wrong
    plot = plots.latency_plot(data.latency_rows(failing), wrong)
    assert flags.WRONG in plot.legend and "x:log" in plot.scales
    clean = plots.latency_plot(
        [r for r in data.latency_rows(failing) if (r.case_id, r.step) not in wrong], {}
    )
    assert flags.WRONG not in clean.legend  # the control: no wrong row, no flag
    switch = plots.switch_plot(data.switch_rows(failing))
    assert any(flags.WRONG in entry for entry in switch.legend)
    # 5 ms swaps beside seconds-long recompiling loads: a log axis, or the swaps are invisible.
    assert "x:log" in switch.scales


def test_known_failures_say_their_reason_and_kind(failing, baseline):
    """A silently wrong swap and a swap that raised are both xfail; the reader sees which, and why."""
    tf = next(c for c in failing.cases if c.case_id == ALPHA_TF)
    reason = tf.steps[4].outcomes[-1].known_failure or next(
        o.known_failure for s in tf.steps for o in s.outcomes if o.known_failure
    )
    md = markdown.render(failing)
    page = html.render(failing)
    summary = summary_markdown(failing, answers_view.summary_lines(failing))
    for text in (md, page, summary):
        assert reason.split(" [")[0][:60] in text.replace("&#x27;", "'")
        assert "wrong output (silent)" in text
    raised = summary_markdown(baseline, answers_view.summary_lines(baseline))
    assert f"`{RAISED}` xfail: raised; known failure: " in raised
    assert f"`{ALPHA_TF}` xfail: wrong output (silent)" in raised
    # The control: a case that passed gets no line.
    assert f"`{ALPHA_PEFT}`" not in raised.split("## Not a plain pass")[1].split("| case |")[0]


def test_a_raised_swap_quotes_the_log_and_links_it(fresh, tmp_path):
    out, results = fresh
    case = next(c for c in results.cases if c.case_id == RAISED)
    assert caselogs.points_elsewhere(case.reason)  # transformers' "look at the above report"
    md = markdown.render(results, results_dir=out, out_dir=out)
    line_at = md.index(f"- `{RAISED}`")
    block = md[line_at : md.index("\n- ", line_at + 1) if "\n- " in md[line_at + 1 :] else None]
    assert "MISMATCH" in block and "size mismatch - ckpt: torch.Size(" in block
    log = f"cases/{Path(case.worker.log).name}"
    assert f"]({log})" in block and (out / log).is_file()
    # Written elsewhere (--out): the link still reaches the log.
    md_elsewhere = markdown.render(results, results_dir=out, out_dir=tmp_path)
    assert os.path.relpath(out / log, tmp_path) in md_elsewhere
    # The control: a log without a loading report gives no lines, and says so.
    assert caselogs.informative_lines("peft-bench worker: started\nall fine\n") == ()
    # The switch table says the swap raised, never "a Hub adapter".
    row = next(r for r in markdown_rows(results, "switch") if r[0] == RAISED and r[2].startswith("hotswap"))
    assert "raised" in row[-1] and "Hub adapter" not in row[-1]


def test_switch_rows_that_raised_are_not_called_hub_adapters(baseline):
    rows = markdown_rows(baseline, "switch")
    raised = next(r for r in rows if r[0] == RAISED and r[2].startswith("hotswap"))
    assert "Hub adapter" not in raised[-1] and "raised" in raised[-1]


def test_x_reload_from_a_plain_load_of_the_same_run(baseline):
    """hotswap-peft has no plain load after its compile; recompile-control (same model, precision, workload,
    compile) has one: the swap is set against it and the note names it. A wrong swap still gets none."""
    rows = answers.with_run_reloads(baseline, data.switch_rows(baseline))
    peft = next(r for r in rows if r.case_id == "hotswap-peft[fp32-aot_eager-peft]" and r.kind != "reload")
    assert peft.over_reload is not None and "recompile-control" in peft.note
    wrong = next(r for r in rows if r.case_id == ALPHA_TF and r.kind != "reload")
    assert wrong.over_reload is None and wrong.note.startswith(flags.WRONG)


def test_answers_come_first_with_intervals_and_a_pick(baseline):
    md = markdown.render(baseline)
    assert md.split("\n## ")[1].startswith("Which to use")
    lead = md.split("## Which to use")[1].split("\n\n")[1]
    assert (
        "fastest: aot_eager + hotswap (peft)" in lead and "avoid aot_eager + hotswap (transformers)" in lead
    )
    assert "to switch adapters: aot_eager + hotswap (peft)" in lead
    assert "Not recorded: time to first token and inter-token latency" in md
    rows = answers.choices(baseline)
    peft = next(r for r in rows if r.key.way == "hotswap (peft)")
    assert peft.latency.low <= peft.latency.estimate <= peft.latency.high and peft.latency.n > 20
    assert peft.switch_over_reload is not None and peft.switch_over_floor is not None
    tf = next(r for r in rows if r.key.way == "hotswap (transformers)")
    assert tf.wrong.startswith(flags.WRONG) and not answers.usable(tf) and tf.switch_over_reload is None
    page = html.render(baseline)
    assert page.index('id="answers"') < page.index('id="environment"') < page.index('id="verdicts"')


def test_serving_strategies_are_choices(serving):
    rows = {r.key.way: r for r in answers.choices(serving)}
    assert rows["serve: hotswap (transformers)"].wrong.endswith("27 of 48 responses wrong")
    assert (
        rows["serve: hotswap (peft)"].switch_over_reload < 1 < rows["serve: reload"].switch_over_reload + 0.5
    )
    line = answers_view.decision_line(answers.advice(list(rows.values()))[0])
    assert line.startswith("smollm2-135m-shape") or "serve" in line
    assert "avoid none + serve: hotswap (transformers)" in line


def test_adapter_overhead_against_the_disabled_adapter_in_the_same_case(fresh):
    _, results = fresh
    rows = [r for r in answers.choices(results) if r.key.workload.startswith("forward") and r.overhead]
    assert rows, [(r.key, r.overhead) for r in answers.choices(results)]
    for r in rows:
        assert r.overhead_case.startswith("forward-latency") and r.overhead.low <= r.overhead.estimate
    # The control: the hotswap case has no disabled step, so no overhead.
    tf = next(r for r in answers.choices(results) if r.cases == (RAISED,))
    assert tf.overhead is None


def test_bootstrap_interval_covers_the_median_and_narrows():
    rng = random.Random(3)
    small = [rng.gauss(10, 1) for _ in range(30)]
    large = [rng.gauss(10, 1) for _ in range(3000)]
    a, b = pooled_median([small]), pooled_median([large])
    assert a.low < 10 < a.high and b.low < 10 < b.high
    assert (b.high - b.low) < (a.high - a.low) / 4
    # Pooled steps are resampled each within itself: a step of 3000 calls at 10 ms and one of 30 at 20 ms.
    pooled = pooled_median([large, [x + 10 for x in small]])
    assert 9.5 < pooled.estimate < 10.5
    r = ratio_of_medians([x * 2 for x in large], large)
    assert r.low < 2.0 < r.high
    assert pooled_median([[1.0, 2.0]]) is None and ratio_of_medians([1.0] * 3, large) is None


def test_steps_of_one_call_pool_beside_steps_of_several():
    """A run whose one case timed one call and another case several crashed at its end: scipy refuses a
    one-value sample. One-call steps are pooled together (held fixed when alone), as a one-value sample
    resamples to itself."""
    import numpy as np
    from scipy.stats import bootstrap

    several = [2.0, 3.0, 4.0, 5.0, 6.0]
    with pytest.raises(ValueError, match="two or more observations"):  # the crash, without the pooling
        bootstrap(([1.0], several), lambda *s, axis=-1: np.median(np.concatenate(s, axis=axis), axis=axis))
    alone = pooled_median([[1.0], several])
    assert alone.estimate == 3.5 and alone.n == 6 and alone.low < 3.5 < alone.high
    # Several one-call steps resample as one group: all of them alone give the same interval as one step
    # holding their calls.
    assert pooled_median([[1.0], [2.0], [3.0], [4.0], [5.0]]) == pooled_median([[1.0, 2.0, 3.0, 4.0, 5.0]])
    # Control: with no one-call step nothing is pooled: the interval of scipy's bootstrap over the steps as given.
    from bench.report.bootstrap import CONFIDENCE, RESAMPLES, SEED

    direct = bootstrap(
        (np.array([1.0, 7.0]), np.array(several)),
        lambda *s, axis=-1: np.median(np.concatenate(s, axis=axis), axis=axis),
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=True,
        batch=200,
        rng=np.random.default_rng(SEED),
    ).confidence_interval
    two = pooled_median([[1.0, 7.0], several])
    assert (two.low, two.high) == (direct.low, direct.high)


@pytest.mark.parametrize("sample_ms, rated", [(0.0, False), (2.0, True)])
def test_a_generate_case_timed_at_0_ms_has_no_token_rate(baseline, sample_ms, rated):
    """A generate case whose timed calls read 0 ms stopped `report` and `site` with a ZeroDivisionError (tokens
    per second). Control: at 2 ms the rate is batch x new tokens / latency."""
    from bench.results.measures import TimingStats

    case = next(c for c in baseline.cases if any(s.timing for s in c.steps))
    scenario = {**case.case["scenario"], "workload": {"kind": "generate", "batch_size": 2, "new_tokens": 4}}
    timed = TimingStats.from_samples([sample_ms] * 6)
    steps = tuple(replace(s, timing=timed) if s.timing else s for s in case.steps)
    one = replace(baseline, cases=(replace(case, case={**case.case, "scenario": scenario}, steps=steps),))
    (choice,) = answers.choices(one)
    assert (choice.tokens_per_s is not None) == rated
    if rated:
        assert choice.tokens_per_s == pytest.approx(2 * 4 / 0.002)


def test_recompile_grid_text_is_readable_on_its_cell(failing):
    cases, steps, cells, vmax = plots_memory.recompile_cells(memory_data.recompile_rows(failing))
    coloured = [c for c in cells if c.text[0] != "0"]
    assert coloured, "the fixture's recompile-zero case recompiles once"
    assert all(contrast(c.foreground, c.background) >= MIN_CONTRAST for c in cells)
    # The control: the old rule (white text on every cell with a recompile) fails on the same cells.
    assert any(contrast(WHITE, c.background) < MIN_CONTRAST for c in coloured)


def test_memory_plot_reads_with_many_cases(failing):
    rows = memory_data.memory_rows(failing)
    many = [replace(r, case_id=f"{r.case_id}#{i}") for i in range(23) for r in rows]
    n = len({r.case_id for r in many})
    assert n > plots_memory.MAX_MEMORY_CASES
    plot = plots_memory.memory_plot(many)
    assert len(plot.legend) <= 4  # what the marks mean, not one entry per case
    assert plot.height_px >= 20 * plots_memory.MAX_MEMORY_CASES  # at least 20 px a case
    assert f"the {plots_memory.MAX_MEMORY_CASES} largest of {n} cases" in plot.titles[0]


def test_growth_plot_keeps_its_legend():
    trained = load(TRAIN)
    plot = plots_memory.growth_plot(memory_data.growth_series(trained))
    assert plot.legend and all("KiB/load" in entry for entry in plot.legend)
    # The legend sits below the axes: the picture is taller than the 4.5 in figure it would be cut to.
    assert plot.height_px > 450


def test_report_files_follow_the_umask(failing, tmp_path):
    old = os.umask(0o022)
    try:
        written = write_reports(failing, tmp_path / "a", ("md",), roots=(REPO,))
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in written.paths}
        assert modes["report.md"] == 0o644, modes
        os.umask(0o077)  # the control: a stricter umask is respected
        written = write_reports(failing, tmp_path / "b", ("md",), roots=(REPO,))
        assert stat.S_IMODE((tmp_path / "b" / "report.md").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_html_tables_scroll_inside_themselves(serving):
    page = html.render(serving)
    assert page.count("<table>") == page.count("<div class='scroll'><table>")
    assert ".scroll { overflow-x: auto;" in page
    # The serving table leads with what decides: after the case, strategy, wrong / checked, verdict.
    assert "<th>case</th><th>strategy</th><th>wrong / checked</th><th>verdict</th>" in page
    assert "<tr class='wrong'>" in page
