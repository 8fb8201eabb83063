"""Results as a tidy pandas DataFrame, and its export to CSV, JSON and Parquet.

One row per case, step and metric, with every case parameter as a column: the same rows as results.csv
(both are built from bench.results.flat_rows.rows), so a table read back from results.csv and one built here agree.

    >>> from bench.results.frames import load_frame
    >>> df = load_frame("reports/baseline/results.json")
    >>> df[df.metric == "latency_ms_median"].pivot_table(index="case_id", columns="step", values="value")
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from bench.errors import BenchInputError
from bench.results.flat_rows import ROW_FIELDS, rows
from bench.results.records import Results
from bench.results.store import load

# Export formats by file suffix; Parquet needs an engine pandas can use.
FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet"}
_PARQUET_ENGINES = ("pyarrow", "fastparquet")


def frame(results: Results):
    """The results' rows as a DataFrame: ROW_FIELDS first, then any further case parameter as a column."""
    import pandas as pd

    extra = sorted({k for c in results.cases for k in c.params} - set(ROW_FIELDS))
    params = {c.case_id: c.params for c in results.cases}
    records = [{**row, **{k: params[row["case_id"]].get(k) for k in extra}} for row in rows(results)]
    df = pd.DataFrame.from_records(records, columns=[*ROW_FIELDS, *extra])
    # Steps are integers; case-level metrics have no step. A nullable integer keeps both without floats.
    df["step"] = df["step"].astype("Int64")
    return df


def load_frame(path: str | Path):
    """frame(load(path)): a results file or a folder holding results.json."""
    return frame(load(path))


def parquet_engine() -> str | None:
    return next((e for e in _PARQUET_ENGINES if importlib.util.find_spec(e) is not None), None)


def export(df, path: str | Path) -> Path:
    """Write `df` as CSV, JSON (records, one object per row) or Parquet, by the file suffix."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise BenchInputError(
            f"unknown table format {path.suffix or '(no suffix)'!r}; use one of {', '.join(FORMATS)}",
            source=str(path),
        )
    if kind == "parquet" and parquet_engine() is None:
        raise BenchInputError(
            "Parquet export needs pyarrow (pip install pyarrow); CSV and JSON work without it",
            source=str(path),
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "csv":
        df.to_csv(path, index=False)
    elif kind == "json":
        df.to_json(path, orient="records", indent=1)
    else:
        df.to_parquet(path, index=False, engine=parquet_engine())
    return path
