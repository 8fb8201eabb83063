"""results.parquet: a columnar copy of results.json, one row per case, for reading large runs fast.

results.json stays the full record and the source of truth (docs/results-schema.md). Beside it, every save
writes results.parquet (when pyarrow is installed): one row per case with the columns a command filters and
counts by (case_id, scenario, verdict, reason, the four named parameters, wall_s), `judge` (the case reduced
to what compare and gate read: bench.results.judging) and `record`, the case's
own JSON text as results.json holds it. The file-level fields (everything but `cases`) and the fingerprint of
the results.json it was written with (size and mtime_ns) are in the Parquet schema's metadata.

A reader uses the columnar file only while that fingerprint matches results.json as it is now: a results.json
edited by hand, replaced, or written by a version that knows nothing of this file is never shadowed by a stale
copy; the reader falls back to parsing results.json (`read` returns None).

Why: parsing a 500 MB results.json into Python objects at once takes minutes and gigabytes; here a command
reads the small columns it needs, and parses cases one row group at a time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.results import fastjson, judging
from bench.results.atomic import replace_atomically

COLUMNAR_FILE = "results.parquet"
FORMAT = "peft-bench-columnar-2"  # 2: the judge column and a SHA-256 fingerprint
META_FORMAT, META_HEADER, META_SOURCE = b"peft_bench.format", b"peft_bench.header", b"peft_bench.source"
PARAM_COLUMNS = ("precision", "compile", "hotswap_path", "strategy")
ROW_GROUP_ROWS = 512  # cases parsed at a time when a reader walks the records


def available() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def fingerprint(path: Path) -> dict[str, Any]:
    """What identifies this version of results.json: size, modification time and a SHA-256 digest of its
    bytes. The digest because a file edited in place within the file system's clock tick (a few ms) keeps its
    size and mtime; reading it back costs about 0.35 s of CPU per 500 MB here. SHA-256, not BLAKE2b (the
    first choice): x86 CPUs hash it in hardware, twice as fast, and this is paid for each file a command reads.
    A copy written with the older key no longer matches and is not read (results.json is, until a save)."""
    st = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest.hexdigest()}


def _quick_mismatch(path: Path, recorded: dict[str, Any]) -> bool:
    """Size or mtime already differ: no need to read the file for its digest."""
    st = os.stat(path)
    return recorded.get("size") != st.st_size or recorded.get("mtime_ns") != st.st_mtime_ns


def write(folder: Path, header: dict[str, Any], cases: Iterable[tuple[dict[str, Any], str]]) -> None:
    """Write folder/results.parquet for the results.json already written there. `header`: the document
    without `cases`; `cases`: each case's (finite-cleaned) data and its JSON text, in file order, consumed one
    row group at a time. Atomic, as every results write; with pyarrow missing, any old columnar file is
    removed so that it cannot be mistaken for this run's. (A save writes the copy while it writes
    results.json, from the records: bench.results.writing; this is for a file built from JSON data.)"""
    folder = Path(folder)
    if not available():
        remove_stale(folder)
        return

    def dump(tmp: Path) -> None:
        with Sink(tmp) as sink:
            for data, text in cases:
                sink.add(row_of_data(data, text))
            sink.finish(header, folder / "results.json")

    replace_atomically(folder / COLUMNAR_FILE, dump)


def remove_stale(folder: Path) -> None:
    """Remove folder's columnar copy (never a link): written without pyarrow, nothing may shadow the JSON."""
    target = Path(folder) / COLUMNAR_FILE
    if os.path.lexists(target) and not os.path.islink(target):
        os.unlink(target)


class Sink:
    """results.parquet being written a row (a tuple in COLUMNS order) at a time, ROW_GROUP_ROWS rows per row
    group: a save writes it while it writes results.json, so no case's text is held longer than its group.
    The header and results.json's fingerprint go into the file's key-value metadata at `finish`, once
    results.json is in place (`read` reads them there)."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {"wall_s": pa.float64(), "non_finite": pa.bool_(), "unverified": pa.bool_()}
        self._schema = pa.schema([(k, types.get(k, pa.string())) for k in COLUMNS])
        # Min/max statistics only for the small columns: nothing reads a text column's range, and its
        # statistics repeat its extreme values in the file's metadata, per row group (in a one-case run's
        # copy they made the copy larger than results.json).
        stats = [k for k in COLUMNS if k not in _TEXT_COLUMNS]
        self._writer = pq.ParquetWriter(path, self._schema, compression="zstd", write_statistics=stats)
        self._rows: list[tuple] = []

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()  # on an error too: replace_atomically removes the half-written file

    def add(self, row: tuple) -> None:
        self._rows.append(row)
        if len(self._rows) == ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._rows:
            columns = dict(zip(COLUMNS, map(list, zip(*self._rows, strict=True)), strict=True))
            self._writer.write_table(pa.table(columns, schema=self._schema))
            self._rows = []

    def finish(self, header: dict[str, Any], results_json: Path) -> None:
        """The last row group, then the metadata: the header, and results.json's fingerprint as it is now."""
        self._flush()
        self._writer.add_key_value_metadata(
            {
                META_FORMAT: FORMAT.encode(),
                META_HEADER: json.dumps(header, allow_nan=False).encode(),
                META_SOURCE: json.dumps(fingerprint(results_json)).encode(),
            }
        )


COLUMNS = (
    "case_id",
    "scenario",
    "verdict",
    "reason",
    *PARAM_COLUMNS,
    "wall_s",
    "non_finite",
    "unverified",  # a step no pair of oracles verified (StepRecord.unverified): summary.unverified_passes
    "record",
    # The case reduced to what compare and gate read (bench.results.judging), as JSON; "null" for a case
    # with non-finite notes. Files written before this column lack it: then those commands read `record`.
    "judge",
    # What a merge writes of the case besides its record, made from the record when it was saved: its
    # results.csv rows as CSV text (bench.results.flat_rows.case_csv), its line of summary.md's case table
    # and its section under "## Steps" (bench.results.summary), and its line in a summary's "Not a plain
    # pass" list (bench.results.failures.failure_line; "" for a pass). None of them names where the case
    # ran, so a merge copies them (bench.results.streaming). Null where the row was made from JSON data, not
    # a record (row_of_data); files written before these columns lack them. Either way a merge builds the
    # record.
    "csv",
    "summary_row",
    "summary_steps",
    "failure_line",
)
PASS_THROUGH_COLUMNS = ("csv", "summary_row", "summary_steps", "failure_line")
_TEXT_COLUMNS = ("record", "judge", *PASS_THROUGH_COLUMNS)


def row_of_data(case: dict[str, Any], text: str) -> tuple:
    """One case's row, in COLUMNS order, from its (finite-cleaned) JSON data and its JSON text."""
    params = case.get("params") or {}
    return (
        case["case_id"],
        case["scenario"],
        case["verdict"],
        case["reason"],
        *(params.get(k) for k in PARAM_COLUMNS),
        case.get("wall_s"),
        bool(case.get("non_finite")),
        any(st.get("unverified") for st in case.get("steps") or ()),
        text,
        json.dumps(judging.reduce_case(case), separators=(",", ":")),
        *(None,) * len(PASS_THROUGH_COLUMNS),  # made from records only (bench.results.writing)
    )


@dataclass(frozen=True)
class Columnar:
    """An open results.parquet that matches its results.json."""

    path: Path
    header: dict[str, Any]
    rows: int

    def frame(self, columns: tuple[str, ...] = ()):
        """The per-case columns (all but `record` and `judge`, unless named) as a pandas DataFrame."""
        import pyarrow.parquet as pq

        names = list(columns) or [n for n in _names(self.path) if n not in ("record", "judge")]
        return pq.read_table(self.path, columns=names).to_pandas()

    def column_lists(self, names: tuple[str, ...]) -> dict[str, list[Any]]:
        """The named per-case columns as Python lists (small ones: not `record`)."""
        import pyarrow.parquet as pq

        table = pq.read_table(self.path, columns=list(names))
        return {n: table.column(n).to_pylist() for n in names}

    def case_data(self) -> Iterator[dict[str, Any]]:
        """Each case's JSON data, in file order, parsed one row group at a time."""
        import pyarrow.parquet as pq

        f = pq.ParquetFile(self.path)
        for batch in f.iter_batches(batch_size=ROW_GROUP_ROWS, columns=["record"]):
            yield from _parsed_column(batch.column(0))

    def row_group_rows(self) -> list[int]:
        """The number of cases in each row group, in file order."""
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(self.path).metadata
        return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]

    def case_data_but(self, skip: Container[str]) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """(case_id, JSON data) of each case in file order; None in place of the data of a case whose id is in
        `skip`, whose record is not parsed (merge already holds it). A second column read, so load() keeps
        case_data."""
        for ids, texts in self._batches(["case_id", "record"]):
            parsed = iter(_parsed([t for i, t in zip(ids, texts, strict=True) if i not in skip]))
            for case_id in ids:
                yield case_id, None if case_id in skip else next(parsed)

    def copyable(self) -> bool:
        """Whether this file's rows hold every column a save writes today, in order (its row_tuples()
        can be copied into a new file as they are)."""
        return tuple(_names(self.path)) == COLUMNS

    def row_tuples(self) -> Iterator[tuple]:
        """Each case's row, in COLUMNS order, in file order (for a copyable file), a row group at a time."""
        for columns in self._batches(list(COLUMNS)):
            yield from zip(*columns, strict=True)

    def _batches(self, columns: list[str]) -> Iterator[list[list[Any]]]:
        import pyarrow.parquet as pq

        f = pq.ParquetFile(self.path)
        for batch in f.iter_batches(batch_size=ROW_GROUP_ROWS, columns=columns):
            yield [batch.column(i).to_pylist() for i in range(len(columns))]

    def judged_cases(self) -> list[dict[str, Any] | None] | None:
        """Each case's reduced data (bench.results.judging), in file order; None when this file has no
        `judge` column (written before it existed) or it cannot be read."""
        import pyarrow.parquet as pq

        try:
            if "judge" not in _names(self.path):
                return None
            column = pq.read_table(self.path, columns=["judge"]).column(0).to_pylist()
            return fastjson.loads("[" + ",".join(column) + "]")  # one parse: keys shared across the cases
        except (OSError, ValueError, TypeError):  # unreadable since `read` checked it: the records are read
            return None


def _parsed(texts: list[str]) -> list[dict[str, Any]]:
    # One parse per batch, as one JSON list: the parser shares the object keys it has seen (json within one call,
    # orjson in a cache of short keys), so the batch's cases hold one copy of each field name, not one per case.
    return fastjson.loads("[" + ",".join(texts) + "]")


def row_group_data(path: Path, group: int) -> list[dict[str, Any]]:
    """The JSON data of the cases of one row group, in file order (bench.results.two_builders)."""
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path).read_row_group(group, columns=["record"])
    return [data for chunk in table.column(0).chunks for data in _parsed_column(chunk)]


def _parsed_column(column: Any) -> list[dict[str, Any]]:
    """Each text of an Arrow string column parsed. With orjson, each straight from its slice of the column's
    data buffer: no Python str per case nor one joined text per batch (at 20,000 cases those two copies of
    450 MB took 2 s, a third of the reading; orjson shares the keys it has seen across calls anyway)."""
    if fastjson.orjson is None or column.null_count or str(column.type) not in ("string", "large_string"):
        return _parsed(column.to_pylist())
    import numpy as np

    _, offsets, data = column.buffers()
    kind = np.int32 if str(column.type) == "string" else np.int64
    at = np.frombuffer(offsets, dtype=kind)[column.offset : column.offset + len(column) + 1].tolist()
    view = memoryview(data) if data is not None else memoryview(b"")
    return [fastjson.loads_utf8(view[at[i] : at[i + 1]]) for i in range(len(column))]


def _names(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_schema(path).names


def read(results_json: Path) -> Columnar | None:
    """The columnar copy beside `results_json`, or None: no pyarrow, no file, another format, an unreadable
    file, or a fingerprint that does not match results.json now (then results.json is read instead)."""
    results_json = Path(results_json)
    path = results_json.parent / COLUMNAR_FILE
    if not available() or not os.path.isfile(path) or os.path.islink(path):
        return None
    import pyarrow.parquet as pq

    try:
        # The file's key-value metadata, where Sink.finish puts it (it holds the schema's metadata too: copies
        # written before Sink kept it there).
        meta = pq.read_metadata(path).metadata or {}
        if meta.get(META_FORMAT) != FORMAT.encode():
            return None
        recorded = json.loads(meta[META_SOURCE])
        if _quick_mismatch(results_json, recorded) or recorded != fingerprint(results_json):
            return None
        rows = pq.ParquetFile(path).metadata.num_rows
        return Columnar(path, json.loads(meta[META_HEADER]), rows)
    except (OSError, KeyError, ValueError, TypeError):  # pyarrow's ArrowInvalid is a ValueError
        return None
