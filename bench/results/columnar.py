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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.results import judging
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
    """Write folder/results.parquet for the results.json just written there. `header`: the document without
    `cases`; `cases`: each case's (finite-cleaned) data and its JSON text, in file order, consumed one row
    group at a time. Atomic, as every results write; with pyarrow missing, any old columnar file is removed
    so that it cannot be mistaken for this run's."""
    folder = Path(folder)
    target = folder / COLUMNAR_FILE
    if not available():
        if os.path.lexists(target) and not os.path.islink(target):
            os.unlink(target)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = {
        META_FORMAT: FORMAT.encode(),
        META_HEADER: json.dumps(header, allow_nan=False).encode(),
        META_SOURCE: json.dumps(fingerprint(folder / "results.json")).encode(),
    }
    types = {"wall_s": pa.float64(), "non_finite": pa.bool_(), "unverified": pa.bool_()}
    schema = pa.schema([(k, types.get(k, pa.string())) for k in COLUMNS]).with_metadata(meta)

    def dump(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for group in _groups(cases):
                writer.write_table(pa.table(_columns(group), schema=schema))

    replace_atomically(target, dump)


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
)


def _groups(cases: Iterable[tuple[dict[str, Any], str]]) -> Iterator[list[tuple[dict[str, Any], str]]]:
    group: list = []
    for item in cases:
        group.append(item)
        if len(group) == ROW_GROUP_ROWS:
            yield group
            group = []
    if group:
        yield group


def _columns(group: list[tuple[dict[str, Any], str]]) -> dict[str, list]:
    cases = [c for c, _ in group]
    return {
        "case_id": [c["case_id"] for c in cases],
        "scenario": [c["scenario"] for c in cases],
        "verdict": [c["verdict"] for c in cases],
        "reason": [c["reason"] for c in cases],
        **{k: [(c.get("params") or {}).get(k) for c in cases] for k in PARAM_COLUMNS},
        "wall_s": [c.get("wall_s") for c in cases],
        "non_finite": [bool(c.get("non_finite")) for c in cases],
        "unverified": [any(st.get("unverified") for st in c.get("steps") or ()) for c in cases],
        "record": [text for _, text in group],
        "judge": [json.dumps(judging.reduce_case(c), separators=(",", ":")) for c in cases],
    }


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

    def case_data(self) -> Iterator[dict[str, Any]]:
        """Each case's JSON data, in file order, parsed one row group at a time."""
        import pyarrow.parquet as pq

        f = pq.ParquetFile(self.path)
        for batch in f.iter_batches(batch_size=ROW_GROUP_ROWS, columns=["record"]):
            # One parse per batch, as one JSON list: the parser shares the object keys it has seen within
            # one call, so the batch's cases hold one copy of each field name, not one per case.
            yield from json.loads("[" + ",".join(batch.column(0).to_pylist()) + "]")

    def judged_cases(self) -> list[dict[str, Any] | None] | None:
        """Each case's reduced data (bench.results.judging), in file order; None when this file has no
        `judge` column (written before it existed) or it cannot be read."""
        import pyarrow.parquet as pq

        try:
            if "judge" not in _names(self.path):
                return None
            column = pq.read_table(self.path, columns=["judge"]).column(0).to_pylist()
            return json.loads("[" + ",".join(column) + "]")  # one parse: keys shared across the cases
        except (OSError, ValueError, TypeError):  # unreadable since `read` checked it: the records are read
            return None


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
        meta = pq.read_schema(path).metadata or {}
        if meta.get(META_FORMAT) != FORMAT.encode():
            return None
        recorded = json.loads(meta[META_SOURCE])
        if _quick_mismatch(results_json, recorded) or recorded != fingerprint(results_json):
            return None
        rows = pq.ParquetFile(path).metadata.num_rows
        return Columnar(path, json.loads(meta[META_HEADER]), rows)
    except (OSError, KeyError, ValueError, TypeError):  # pyarrow's ArrowInvalid is a ValueError
        return None
