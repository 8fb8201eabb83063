"""The report's cost grows with the run, not with its bookkeeping: each figure worked out once per Results
(bench.report.memo), and no table built by a scan of the run for each of its rows."""

from __future__ import annotations

import dataclasses
import gc
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom

from bench.report import answers, answers_view, bootstrap, data, memo, memory_data, training
from bench.results.store import load

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "reports" / "baseline" / "results.json"


def _copies(n: int):
    """The baseline run's cases copied n times over, each copy its own scenario (distinct case ids)."""
    base = load(BASELINE)
    cases = []
    for i in range(n):
        c = base.cases[i % len(base.cases)]
        name = f"s{i:05d}-{c.scenario}"
        cases.append(dataclasses.replace(c, case_id=name + c.case_id[len(c.scenario) :], scenario=name))
    return dataclasses.replace(base, cases=tuple(cases), scenario_set=())


def test_a_figure_is_worked_out_once_per_results_object():
    calls = []

    @memo.per_results
    def count(results, extra=None):
        calls.append(extra)
        return len(results.cases)

    results = _copies(3)
    assert count(results) == count(results) == 3 and calls == [None]
    assert count(results, "other") == 3 and calls == [None, "other"]  # other arguments: their own value
    # Negative control: an edited copy is another object and is worked out again, with its own value.
    fewer = dataclasses.replace(results, cases=results.cases[:1])
    assert count(fewer) == 1 and len(calls) == 3
    assert count(results) == 3 and len(calls) == 4  # one run's values kept at a time


def test_the_cache_never_keeps_a_run_alive():
    @memo.per_results
    def cases_of(results):
        return results.cases

    results = _copies(2)
    cases_of(results)
    assert memo._values  # noqa: SLF001
    del results
    gc.collect()
    assert not memo._values  # noqa: SLF001 - the run's values went with it


def test_cached_rows_are_the_rows_worked_out_afresh():
    results = _copies(10)
    again = dataclasses.replace(results)  # equal content, another object: nothing cached for it
    assert answers.choices(results) is answers.choices(results)
    assert answers.choices(again) == answers.choices(results)
    assert data.latency_rows(again) == data.latency_rows(results)


def _uncached(fn):
    return getattr(fn, "__wrapped__", fn)  # the function itself, not its per-Results cache


def _verdict_matrix_s(n: int) -> float:
    """The best of three CPU times, with the cyclic collector off: a collection pass over the 20,000 copies
    falling inside one timing took it from ~0.03 s to 0.24 s (a failure, once, of the linear code)."""
    results = _copies(n)
    times = []
    was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(3):
            t0 = time.process_time()
            rows, _, _ = _uncached(data.verdict_matrix)(results)
            times.append(time.process_time() - t0)
            assert len(rows) == n
    finally:
        if was:
            gc.enable()
    return min(times)


def test_the_verdict_matrix_is_linear_in_the_scenarios():
    # 8x the scenarios; a list-membership scan per case (the old code) took ~60x the time at these sizes.
    small, large = _verdict_matrix_s(2_500), _verdict_matrix_s(20_000)
    assert large < max(16 * small, 0.1), (small, large)  # linear here: 0.03 s, 10-14x


def test_the_verdict_matrix_keeps_first_seen_order():
    results = _copies(10)
    rows, cols, cells = _uncached(data.verdict_matrix)(results)
    assert rows == [c.scenario for c in results.cases]  # each copy is its own scenario, in run order
    assert cols == list(
        dict.fromkeys(f"{c.params['precision']} / {c.params['compile']}" for c in results.cases)
    )
    assert all(
        cells[(c.scenario, f"{c.params['precision']} / {c.params['compile']}")] == c.verdict
        for c in results.cases
    )


def _train_row(case_id: str, *, full: bool, precision: str = "fp32", compile: str = "none", base: int = 1000):
    return training.TrainRow(
        case_id=case_id,
        scenario="s",
        precision=precision,
        compile=compile,
        step=1,
        full=full,
        optimizer_steps=2,
        trainable_params=base if full else 10,
        total_params=base if full else base + 10,
        base_params=base,
        grad_bytes=4 * (base if full else 10),
        optimizer_state_bytes=8 * (base if full else 10),
        rss_peak_bytes=None,
        rss_unavailable="not measured",
        n=2,
        step_median_ms=1.0,
        step_iqr_ms=0.0,
        step_samples_ms=(1.0, 1.0),
        loss_first=1.0,
        loss_last=0.5,
    )


def test_lora_rows_pair_with_the_same_compile_setting_else_the_first_full_row():
    fulls = [
        _train_row("full-eager", full=True),
        _train_row("full-compiled", full=True, compile="default"),
        _train_row("full-other-base", full=True, base=2000),
    ]
    lora = [
        _train_row("lora-compiled", full=False, compile="default"),
        _train_row("lora-max", full=False, compile="max-autotune"),
        _train_row("lora-bf16", full=False, precision="bf16"),
    ]
    pairs = {s.lora.case_id: s.full.case_id for s in training.lora_savings([*fulls, *lora])}
    assert pairs == {"lora-compiled": "full-compiled", "lora-max": "full-eager"}  # bf16: no full row
    notes = training.unpaired_notes([*fulls, *lora], training.lora_savings([*fulls, *lora]))
    assert len(notes) == 1 and "lora-bf16 step 1" in notes[0]


def test_many_unpaired_lora_rows_are_named_up_to_a_limit():
    rows = [
        _train_row("full", full=True),
        *(_train_row(f"l{i}", full=False, precision="bf16") for i in range(50)),
    ]
    (note,) = training.unpaired_notes(rows, training.lora_savings(rows))
    assert "50 train steps, first 10:" in note and "l9 step 1" in note and "l10 step 1" not in note


def test_a_large_pool_gets_the_order_statistic_interval():
    rng = np.random.default_rng(5)
    groups = [rng.normal(10, 1, 50) for _ in range(400)]  # 20,000 calls
    iv = bootstrap.pooled_median(groups)
    pooled = np.sort(np.concatenate(groups))
    n = len(pooled)
    assert iv.method == bootstrap.ORDER_STATISTICS and iv.n == n and iv.estimate == float(np.median(pooled))
    # The ends are order statistics r and n - r + 1 with P(B <= r - 1) < 2.5 % <= P(B <= r), B ~ Bin(n, 1/2).
    r = int(np.searchsorted(pooled, iv.low)) + 1
    assert pooled[r - 1] == iv.low and pooled[n - r] == iv.high
    assert binom.cdf(r - 1, n, 0.5) < 0.025 <= binom.cdf(r, n, 0.5)
    assert iv.low < 10 < iv.high and iv.high - iv.low < 0.06  # about 2 x 1.96 x 1.25 / sqrt(n) = 0.035
    # Negative control: at most MAX_BOOTSTRAP_SAMPLES calls keep the bootstrap, and it agrees in width.
    small = bootstrap.pooled_median(groups[: bootstrap.MAX_BOOTSTRAP_SAMPLES // 50])
    assert small.method == bootstrap.BOOTSTRAP and small.low < 10 < small.high


def test_the_lower_rank_is_the_binomial_quantile_scipy_stats_gives():
    ns = [*range(1, 2500), 10_001, 20_000, 123_457, 750_000, 2_000_003]
    assert [bootstrap.lower_rank(n) for n in ns] == [int(binom.ppf(0.025, n, 0.5)) for n in ns]


def test_the_binomial_cdf_is_scipys_on_both_sides_of_the_mean():
    from scipy.special import bdtr

    cases = [
        (k, n) for n in (1, 2, 7, 40, 999, 20_000, 750_000) for k in {-1, 0, 1, n // 3, n // 2, n - 2, n}
    ]
    # rel 1e-8: log-gamma of 750,001 is about 9e6, whose last bit is about 2e-9 (every term carries it).
    for k, n in cases:
        want = 0.0 if k < 0 else float(bdtr(k, n, 0.5))
        assert bootstrap.binomial_half_cdf(k, n) == pytest.approx(want, rel=1e-8, abs=1e-300), (k, n)


def test_a_large_pool_imports_no_scipy():
    """scipy.stats takes 1.5 s to import and scipy.special 0.8 s: a report whose pools are all past
    MAX_BOOTSTRAP_SAMPLES needs neither. A fresh interpreter each; the control, a small pool, does import
    scipy.stats (the bootstrap)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from bench.report import bootstrap as b; "
        "n = int(sys.argv[1]); b.pooled_median([np.arange(n, dtype=float)]); "
        "print(sorted(m for m in ('scipy', 'scipy.stats') if m in sys.modules))"
    )
    seen = {
        n: subprocess.run(
            [sys.executable, "-c", code, str(n)], capture_output=True, text=True, cwd=REPO, check=True
        ).stdout.strip()
        for n in (20_000, 100)
    }
    assert seen == {20_000: "[]", 100: "['scipy', 'scipy.stats']"}


def test_the_answers_name_the_rows_with_an_order_statistic_interval():
    # 275 copies: the "hotswap (peft)" row pools 110 cases x 2 steps x ~47 calls, over 10,000.
    section = answers_view.section(_copies(275))
    (note,) = [n for n in section.notes if "order statistics" in n]
    assert "hotswap (peft)" in note and "hotswap (transformers)" not in note
    assert not [n for n in answers_view.section(_copies(10)).notes if "order statistics" in n]


def test_a_listed_table_is_its_first_rows_and_counts_them_all():
    """The tables and figures make rows only for what they show (data.Listed): each listing is the first rows
    of the whole table, with the whole table's count. 300 copies: every table is past MAX_TABLE_ROWS."""
    results = _copies(300)
    limit = data.MAX_TABLE_ROWS
    tables = {
        "latency": (data.latency_listed, data.latency_rows),
        "memory": (memory_data.memory_listed, memory_data.memory_rows),
        "growth": (memory_data.growth_listed, memory_data.growth_series),
        "recompiles": (memory_data.recompile_listed, memory_data.recompile_rows),
    }
    for name, (listed, every) in tables.items():
        rows = every(results)
        assert len(rows) > limit, name  # the control: a table longer than it lists
        shown = listed(results)
        assert (shown.rows, shown.total) == (rows[:limit], len(rows)), name
        assert listed(results, 7).rows == rows[:7], name
    # The recompile table: the steps of the cases that compiled anything where dynamo did something, or
    # was told to fail, as the rows say.
    rows = memory_data.recompile_rows(results)
    active = set(memory_data.has_compile_activity(rows))
    want = [
        r
        for r in rows
        if r.case_id in active and (r.recompiles or r.frame_compiles or r.graph_breaks or r.strict)
    ]
    table = memory_data.recompile_table(results)
    assert 0 < len(want) < len(rows) and (table.rows, table.total) == (want[:limit], len(want))
    # The memory summary: one entry per case with memory figures, its rows in step order.
    by_case: dict[str, list] = {}
    for r in memory_data.memory_rows(results):
        by_case.setdefault(r.case_id, []).append(r)
    summary = memory_data.memory_by_case(results)
    assert (summary.rows, summary.total) == (list(by_case.items())[:limit], len(by_case))


def test_a_table_makes_no_row_it_does_not_list(monkeypatch):
    """Negative control for the listings above: the slope of a growth series (0.5 s for every case of a
    20,000-case run) is fitted for the series listed only."""
    results = _copies(300)
    fits = []
    real = memory_data._slope  # noqa: SLF001

    def counted(values):
        fits.append(values)
        return real(values)

    monkeypatch.setattr(memory_data, "_slope", counted)
    fitted = sum(1 for part in memory_data.growth_parts(results) if part[-1])  # series of load steps
    assert fitted > 5  # the control: more series to fit than are listed
    assert memory_data.growth_listed(results, 5).total > 5 and len(fits) == 5
    memory_data.growth_series(results)  # every series: every one fitted
    assert len(fits) == 5 + fitted
