"""Writing results.json and its columnar copy in one pass over the cases, each case encoded once.

What is written means what it always did (docs/results-schema.md); what changed is how. Before, a save built
the whole document as dicts (to_dict), walked it again for NaN (bench.results.finite), and wrote it with
json.dumps(indent=1): an indented dump cannot use the json module's C encoder, and the document and its text
were held at once (about 100 s and 2.6 GB at 10,000 cases). Now each case is encoded straight from its record
by the C encoder (`_fields` hands it each record's fields), written to results.json, and passed with its row to
results.parquet, before the next. The file-level fields keep their indented layout; each case is one line:

    {
     "schema_version": 3,
     ...
     "cases": [
    {"case_id": "...", "scenario": "...", ...},
    {"case_id": "...", ...}
     ],
     "command": [...],
     ...
    }

A case holding a NaN or an infinity (the C encoder refuses it: allow_nan=False) is written the old way: its
data cleaned by replace_non_finite, with notes under its path in the file (`cases[3].steps[1]...`), as before.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from bench.results import columnar, judging
from bench.results.atomic import replace_atomically
from bench.results.failures import failure_line
from bench.results.finite import NOTES_KEY, replace_non_finite
from bench.results.flat_rows import case_csv
from bench.results.records import CaseResult, Results
from bench.results.summary import steps_lines, table_row
from bench.spec.codec import to_dict

RESULTS_FILE = "results.json"
_CSV_AT = columnar.COLUMNS.index("csv")
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
# Stands for the cases while the file-level fields are dumped; found by position (the first or last key).
_MARK = "\x00cases\x00"


def _fields(record: Any) -> dict[str, Any]:
    """The C encoder's `default`: a record's fields, in order, as to_dict names them (their values are
    encoded by the encoder itself, recursing into records through this again). A frozen dataclass's
    __dict__ is exactly its fields in order (its __init__ sets each, in order) unless something added to
    it: then, and for a class with __slots__, the fields are read one by one."""
    kind = type(record)
    names = _FIELD_NAMES.get(kind)
    if names is None:
        if not dataclasses.is_dataclass(record) or isinstance(record, type):
            raise TypeError(f"Object of type {kind.__name__} is not JSON serializable")
        names = _FIELD_NAMES[kind] = tuple(f.name for f in dataclasses.fields(record))
    own = getattr(record, "__dict__", None)
    if own is not None and len(own) == len(names):
        return own
    return {n: getattr(record, n) for n in names}


class Encoded(NamedTuple):
    """A case whose JSON text and columnar row are already made (a merge copies them from its input:
    bench.results.streaming); written as they are."""

    text: str
    row: tuple


def encode_case(case: CaseResult) -> str | None:
    """The case's JSON text, as json.dumps(to_dict(case)) gives it; None when a value is not finite."""
    try:
        return json.dumps(case, default=_fields, allow_nan=False)
    except ValueError:  # "Out of range float values are not JSON compliant": the caller cleans it
        return None


def record_row(case: CaseResult, text: str) -> tuple:
    """columnar.row_of_data for a case encoded from its record (all its values finite)."""
    params = case.params or {}
    return (
        case.case_id,
        case.scenario,
        case.verdict,
        case.reason,
        *(params.get(k) for k in columnar.PARAM_COLUMNS),
        case.wall_s,
        bool(case.non_finite),
        any(s.unverified for s in case.steps),
        text,
        json.dumps(judging.reduce_record(case), separators=(",", ":")),
        case_csv(case),
        table_row(case),
        "\n".join(steps_lines(case)),
        failure_line(case),  # "" for a plain pass
    )


def _top(results: Results) -> tuple[dict[str, Any], dict[str, Any]]:
    """The file-level fields before `cases` and after it, as plain data."""
    names = [f.name for f in dataclasses.fields(Results)]
    at = names.index("cases")
    before = {n: to_dict(getattr(results, n)) for n in names[:at]}
    return before, {n: to_dict(getattr(results, n)) for n in names[at + 1 :]}


def write_json(
    f: TextIO, results: Results, sink: columnar.Sink | None, csv_file: TextIO | None = None
) -> dict[str, Any]:
    """results.json into `f`, each case's row into `sink` and its results.csv rows into `csv_file` (after the
    header, which the caller writes); returns the document without `cases` (what the columnar copy's header
    holds), with the notes on every non-finite value. The notes are in the order one walk over the whole
    document gave them: the fields before the cases, the cases, the fields after."""
    before, after = _top(results)
    before, notes = replace_non_finite(before)
    text = json.dumps({**before, "cases": _MARK}, indent=1, allow_nan=False)
    f.write(text[: text.rindex(json.dumps(_MARK))] + "[")
    i = -1  # results.cases may be an iterator (a merge streams its cases: bench.results.streaming)
    for i, case in enumerate(results.cases):
        if isinstance(case, Encoded):
            text, row = case.text, case.row
        else:
            text = encode_case(case)
            if text is not None:
                row = record_row(case, text) if sink is not None else None
            else:
                data, case_notes = replace_non_finite(to_dict(case), f"cases[{i}]")
                notes.update(case_notes)
                text = json.dumps(data, allow_nan=False)
                row = columnar.row_of_data(data, text) if sink is not None else None
        f.write(("\n" if i == 0 else ",\n") + text)
        if sink is not None:
            sink.add(row)
        if csv_file is not None:  # the row's CSV text where it has one (made from the record), else made here
            rows_text = None if row is None else row[_CSV_AT]
            csv_file.write(case_csv(case) if rows_text is None else rows_text)
    after, after_notes = replace_non_finite(after)
    notes.update(after_notes)
    if notes:  # as bench.results.finite.encode: the notes name each value that was written as null
        after[NOTES_KEY] = {**(after.get(NOTES_KEY) or {}), **notes}
    text = json.dumps({"cases": _MARK, **after}, indent=1, allow_nan=False)
    mark = json.dumps(_MARK)
    f.write(("\n ]" if i >= 0 else "]") + text[text.index(mark) + len(mark) :] + "\n")
    return {**before, **after}


def save_json_and_columnar(out_dir: Path, results: Results, csv_file: TextIO | None = None) -> None:
    """results.json and results.parquet, each atomic; results.json is in place first, so that the columnar
    copy records the fingerprint of the file it was written with. Without pyarrow, any old copy is removed.
    Each case's results.csv rows go into `csv_file` as it is written (store.save and a merge pass the
    results.csv being written, so a case's rows are made once, for both files)."""
    out_dir = Path(out_dir)
    target = out_dir / RESULTS_FILE
    header: dict[str, Any] = {}

    def dump(tmp: Path, sink: columnar.Sink | None) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            header.update(write_json(f, results, sink, csv_file))

    if not columnar.available():
        replace_atomically(target, lambda tmp: dump(tmp, None))
        columnar.remove_stale(out_dir)
        return

    def dump_columnar(tmp: Path) -> None:
        with columnar.Sink(tmp) as sink:
            replace_atomically(target, lambda json_tmp: dump(json_tmp, sink))
            sink.finish(header, target)

    replace_atomically(out_dir / columnar.COLUMNAR_FILE, dump_columnar)
