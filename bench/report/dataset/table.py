"""One run as a table others can load: the tidy frame (bench.results.frames.frame) plus the run's own
columns (its id, start, verdict rules, environment, library versions), with one fixed Arrow schema.

Fixed, so that every run's Parquet file has the same columns and types and a glob over all of them loads
as one table (`datasets.load_dataset("parquet", data_files=...)` refuses files whose schemas differ): case
parameters beyond the usual ones go into `params_json`, libraries beyond the recorded set into
`libraries_json`, and a column a run has no value for is null, never missing.
"""

from __future__ import annotations

import json

from bench.errors import BenchInputError
from bench.results.environment import LIBRARIES
from bench.results.flat_rows import ROW_FIELDS, case_rows
from bench.results.frames import parquet_engine
from bench.results.records import Results
from bench.results.runs import Run

_INT_ROW_FIELDS = {"step"}
_FLOAT_ROW_FIELDS = {"value"}
# Run-level columns: name -> Arrow type name. Library versions follow as <name>_version (LIBRARIES).
RUN_COLUMNS: dict[str, str] = {
    "run_id": "string",
    "run_started_at": "timestamp",
    "verdict_rules": "int64",
    "schema_version": "int64",
    "suite_version": "string",
    "git_commit": "string",
    "device": "string",
    "gpu": "string",
    "cpu": "string",
    "cpu_count": "int64",
    "torch_threads": "int64",
    "python": "string",
    "platform": "string",
    "jobs": "int64",
    "shard": "string",
    "interrupted": "bool",
    "libraries_json": "string",
    "params_json": "string",
}
HOSTNAME_COLUMN = "hostname"


def library_column(name: str) -> str:
    return name.replace("-", "_") + "_version"


def column_names(*, with_hostname: bool = False) -> list[str]:
    names = [*ROW_FIELDS, *RUN_COLUMNS, *(library_column(n) for n in LIBRARIES)]
    return [*names, HOSTNAME_COLUMN] if with_hostname else names


def schema(*, with_hostname: bool = False):
    import pyarrow as pa  # heavy: only when a dataset is written

    types = {"string": pa.string(), "int64": pa.int64(), "bool": pa.bool_(), "float64": pa.float64()}
    types["timestamp"] = pa.timestamp("s", tz="UTC")

    def kind(name: str) -> str:
        if name in _INT_ROW_FIELDS:
            return "int64"
        if name in _FLOAT_ROW_FIELDS:
            return "float64"
        return RUN_COLUMNS.get(name, "string")

    return pa.schema([(n, types[kind(n)]) for n in column_names(with_hostname=with_hostname)])


def _text(value: object) -> str | None:
    """A cell of a text column: a missing or NaN parameter is null, a verdict its enum's text."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value)


# The flat row's fields that are the case's own (the same on each of its rows), and the step's and metric's.
_CASE_FIELDS = ROW_FIELDS[: ROW_FIELDS.index("step")]
_ROW_FIELDS = ROW_FIELDS[len(_CASE_FIELDS) :]


def row_columns(results: Results) -> dict[str, list]:
    """ROW_FIELDS -> the cells of results.csv's rows (bench.results.flat_rows), each as its Arrow column holds
    it: texts (or null), `step` an int (or null), `value` a float. A case's own fields are converted once for
    all its rows, and no DataFrame is built between: at 20,000 cases (1.7 million rows) the frame and a
    conversion per cell were most of a publish's time."""
    out: dict[str, list] = {name: [] for name in ROW_FIELDS}
    text = {name: out[name] for name in _ROW_FIELDS if name not in ("step", "value")}
    for case in results.cases:
        rows = list(case_rows(case))
        if not rows:
            continue
        for name, value in zip(_CASE_FIELDS, rows[0], strict=False):
            out[name].extend([_text(value)] * len(rows))
        cells = dict(zip(ROW_FIELDS, zip(*rows, strict=True), strict=True))
        out["step"].extend(None if v is None else int(v) for v in cells["step"])
        out["value"].extend(float(v) for v in cells["value"])
        for name, column in text.items():
            column.extend(map(_text, cells[name]))
    return out


def run_table(run: Run, *, with_hostname: bool = False):
    """The run's rows as a pyarrow Table of `schema()` (the results are expected host-free already unless
    `with_hostname`)."""
    if parquet_engine() != "pyarrow":
        raise BenchInputError(
            "publishing needs pyarrow (pip install 'peft-bench[report]')", source=run.source
        )
    import pyarrow as pa  # heavy: only when a dataset is written

    r = run.results
    env = r.environment
    params = {c.case_id: json.dumps(c.params, sort_keys=True) for c in r.cases}
    known = set(LIBRARIES)
    columns = row_columns(r)
    run_values = {
        "run_id": run.run_id,
        "run_started_at": run.started_at,
        "verdict_rules": r.verdict_rules,
        "schema_version": r.schema_version,
        "suite_version": r.suite_version,
        "git_commit": env.git_commit,
        "device": env.device,
        "gpu": env.gpu,
        "cpu": env.cpu,
        "cpu_count": env.cpu_count,
        "torch_threads": env.torch_threads,
        "python": env.python,
        "platform": env.platform,
        "jobs": r.jobs,
        "shard": r.shard,
        "interrupted": r.interrupted,
        "libraries_json": json.dumps(
            {k: v for k, v in env.libraries.items() if k not in known}, sort_keys=True
        ),
        **{library_column(n): env.libraries.get(n) for n in LIBRARIES},
    }
    if with_hostname:
        run_values[HOSTNAME_COLUMN] = env.hostname
    n = len(columns["case_id"])
    for name, value in run_values.items():
        columns[name] = [value] * n
    columns["params_json"] = [params.get(cid) for cid in columns["case_id"]]
    target = schema(with_hostname=with_hostname)
    return pa.table({f.name: pa.array(columns[f.name], type=f.type) for f in target}, schema=target)
