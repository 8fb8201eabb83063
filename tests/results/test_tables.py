"""The tidy table: the same rows as results.csv, case parameters as columns, exports that read back."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from bench.errors import BenchInputError
from bench.results.flat_rows import ROW_FIELDS, to_csv
from bench.results.frames import export, frame, load_frame, parquet_engine
from bench.results.store import load
from tests.conftest import REPO

RESULTS = REPO / "tests" / "fixtures" / "results" / "noise-a"


@pytest.fixture(scope="module")
def results():
    return load(RESULTS)


def test_frame_agrees_with_results_csv(results):
    df = frame(results)
    from_csv = pd.read_csv(io.StringIO(to_csv(results)))
    assert list(df.columns[: len(ROW_FIELDS)]) == list(ROW_FIELDS)
    assert len(df) == len(from_csv) > 100
    pd.testing.assert_series_equal(
        df["value"].astype(float), from_csv["value"].astype(float), check_names=False
    )
    assert (df["metric"] == from_csv["metric"]).all() and (df["case_id"] == from_csv["case_id"]).all()


def test_every_case_has_a_row_so_errors_are_counted(results):
    """An errored or unfinished case measured nothing, and had no row: a table (results.csv, --table, a
    published dataset) counted only the cases that ran. Each case now has one `case` row."""
    from dataclasses import replace

    first = results.cases[0]
    broken = replace(
        first,
        case_id="broken[fp32-none]",
        verdict="error",
        reason="model missing",
        steps=(),
        total_recompiles=None,
        phases_s={},
    )
    df = frame(replace(results, cases=(*results.cases, broken)))
    mine = df[df.case_id == broken.case_id]
    assert list(mine.metric) == ["case"] and list(mine.verdict) == ["error"] and list(mine.value) == [1]
    counted = df[df.metric == "case"].groupby("verdict").size().to_dict()
    expected = pd.Series([c.verdict for c in (*results.cases, broken)]).value_counts().to_dict()
    assert counted == expected and counted["error"] == 1
    # Control: a case that ran has its metric rows beside its one case row.
    theirs = df[df.case_id == first.case_id]
    assert (theirs.metric == "case").sum() == 1 and len(theirs) > 10


def test_a_workers_error_says_its_reason_in_the_summary_line(results):
    """An error before any step (a missing model, a crash) was listed as "error: error". Control: a case
    whose step raised names the way it failed, not the reason."""
    from dataclasses import replace

    from bench.results.failures import failure_line

    broken = replace(
        results.cases[0],
        verdict="error",
        reason="FileNotFoundError: model '/x': path  does\nnot exist",
        steps=(),
    )
    assert failure_line(broken).endswith("error: FileNotFoundError: model '/x': path does not exist")
    assert failure_line(replace(broken, reason="x" * 500)).endswith("[340 more characters in results.json]")
    raised = next(c for c in results.cases if any(s.error for s in c.steps))
    assert ": raised" in failure_line(replace(raised, verdict="error"))


def test_frame_is_tidy_with_parameters_as_columns(results):
    df = load_frame(RESULTS)
    assert str(df["step"].dtype) == "Int64"  # steps stay integers; case-level rows have none
    assert df["step"].isna().any() and not df["step"].dropna().empty
    one = df[(df.case_id == "hotswap-peft[fp32-aot_eager-peft]") & (df.metric == "recompiles")]
    assert set(one["precision"]) == {"fp32"} and set(one["compile"]) == {"aot_eager"}
    assert set(one["hotswap_path"]) == {"peft"} and one["value"].sum() == 0
    # one row per case, step and metric
    assert not df.duplicated(["case_id", "step", "metric"]).any()
    med = df[df.metric == "latency_ms_median"]
    expected = {
        (c.case_id, s.index): s.timing.median_ms
        for c in results.cases
        for s in c.steps
        if s.timing is not None
    }
    assert {(r.case_id, r.step): r.value for r in med.itertuples()} == expected


def test_extra_case_parameters_become_columns(results):
    from dataclasses import replace

    extra = replace(
        results, cases=tuple(replace(c, params={**c.params, "device_map": "auto"}) for c in results.cases)
    )
    df = frame(extra)
    assert df.columns[-1] == "device_map" and set(df["device_map"]) == {"auto"}


def test_export_csv_and_json_read_back(results, tmp_path):
    df = frame(results)
    csv_path = export(df, tmp_path / "t.csv")
    back = pd.read_csv(csv_path)
    assert len(back) == len(df) and list(back.columns) == list(df.columns)
    json_path = export(df, tmp_path / "t.json")
    rows = json.loads(json_path.read_text())
    assert len(rows) == len(df) and rows[0]["case_id"] == df.iloc[0]["case_id"]


def test_parquet_without_an_engine_is_a_clear_error(results, tmp_path, monkeypatch):
    monkeypatch.setattr("bench.results.frames.parquet_engine", lambda: None)
    with pytest.raises(BenchInputError, match="pyarrow") as exc:
        export(frame(results), tmp_path / "t.parquet")
    assert "t.parquet" in str(exc.value) and not (tmp_path / "t.parquet").exists()


@pytest.mark.skipif(parquet_engine() is None, reason="pyarrow (or fastparquet) is not installed here")
def test_parquet_reads_back(results, tmp_path):
    df = frame(results)
    back = pd.read_parquet(export(df, tmp_path / "t.parquet"))
    assert len(back) == len(df)


def test_unknown_format(results, tmp_path):
    with pytest.raises(BenchInputError, match="unknown table format '.xlsx'"):
        export(frame(results), tmp_path / "t.xlsx")


@pytest.mark.parametrize(
    "metrics",
    [
        {"latency_ms_median", "total_recompiles", "rss_peak_bytes"},
        {"phase_load_model_s"},
        {"no such metric"},
        set(),
    ],
    ids=["steps-and-case", "a-phase", "unknown", "none"],
)
def test_row_lists_of_some_metrics_are_those_rows_of_every_row(results, metrics):
    """row_lists' `metrics` filter (a site's trends read 5 metrics of about 40): the same rows, in the same
    order, as filtering every row afterwards; the rows of the other metrics are never made."""
    from bench.results.flat_rows import row_lists

    at = ROW_FIELDS.index("metric")
    every = list(row_lists(results))
    some = list(row_lists(results, metrics))
    assert some == [r for r in every if r[at] in metrics]
    assert bool(some) == bool(metrics - {"no such metric"})  # each known metric has rows here
    assert list(row_lists(results, None)) == every and len({r[at] for r in every}) > 10
