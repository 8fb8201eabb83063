"""Results files: results.json (the full records), results.csv (flat rows for pandas), loading with checks.

See docs/results-schema.md for the fields. Every write is atomic.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bench.errors import BenchInputError
from bench.results import columnar, judging, two_builders
from bench.results.atomic import replace_atomically
from bench.results.checks import ResultsInvalid, parse_results
from bench.results.collector import collector_paused
from bench.results.finite import NOTES_KEY
from bench.results.flat_rows import write_header
from bench.results.outfiles import file_kind
from bench.results.records import CaseResult, Results
from bench.results.summary import SUMMARY_FILE
from bench.results.writing import save_json_and_columnar
from bench.spec.codec import from_dict

T = TypeVar("T")

RESULTS_FILE = "results.json"
CSV_FILE = "results.csv"
CASES_DIR = "cases"  # each case's spec, result and log (bench.runner.launch)
# What a run leaves in its folder; `--overwrite` removes all of it first, so that nothing of the old run
# (a case file of a case the new run does not have) stays beside the new results.
RUN_OUTPUTS = (RESULTS_FILE, CSV_FILE, columnar.COLUMNAR_FILE, SUMMARY_FILE, CASES_DIR)


def holds_results(folder: Path) -> bool:
    """Whether `folder` holds a results file (a dangling link there counts: it is in the way too)."""
    return os.path.lexists(Path(folder) / RESULTS_FILE)


def remove_run_outputs(folder: Path) -> None:
    """Remove the results, summary and case files of the run in `folder` (for --overwrite). A link is
    removed, never followed; anything else in the folder (the lock, a user's file) is left alone."""
    for name in RUN_OUTPUTS:
        path = Path(folder) / name
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)


def save(out_dir: Path, results: Results) -> None:
    """results.json, results.parquet (bench.results.writing: one pass, each case encoded once) and results.csv,
    each written atomically, in that order."""
    out_dir = Path(out_dir)

    def dump_csv(
        tmp: Path,
    ) -> None:  # results.csv is written beside the other two, each case's rows made once
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            write_header(f)
            save_json_and_columnar(out_dir, results, f)

    replace_atomically(out_dir / CSV_FILE, dump_csv)


def load(path: str | Path) -> Results:
    """Load a results file (or a folder holding results.json), with a clear error for anything else. A
    columnar copy that matches the file (bench.results.columnar) is read instead of the JSON when it can be."""
    path = _results_file(path)
    with collector_paused():
        return _load(path)


def loaded_frozen(load_fn: Callable[..., T], *args: Any) -> T:
    """`load_fn(*args)` for a command that keeps what it loads until it ends (report, site, publish): the
    caller calls gc.unfreeze() when it is done with it.

    The loaded records (millions of objects at 20,000 cases) hold no cycles: frozen, the collector's passes
    while the command works no longer walk them (about 1 s of CPU at 5,000 cases in a report; a site's list
    of timed steps took 3.3 s at 20,000 cases for that alone). Frozen before the collector is back on: the
    objects made while it was off all wait in its youngest generation, and its first pass after would walk
    them once (2.2 s at 20,000 cases)."""
    with collector_paused():
        out = load_fn(*args)
        gc.freeze()
    return out


def _load(path: Path) -> Results:
    fast = _load_columnar(path)
    if fast is not None:
        return fast
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BenchInputError(f"cannot read: {exc.strerror}", source=str(path)) from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchInputError(f"not a results file (invalid JSON: {exc})", source=str(path)) from None
    except RecursionError:
        raise BenchInputError("not a results file (JSON nested too deeply)", source=str(path)) from None
    except ValueError as exc:  # json raises it for an integer literal of more than 4300 digits
        raise BenchInputError(
            f"not a results file ({' '.join(str(exc).split())[:100]})", source=str(path)
        ) from None
    del raw
    try:
        return parse_results(data)
    except ResultsInvalid as exc:
        raise BenchInputError(exc.message, source=str(path), field=exc.where or None) from None


def load_streamable(path: str | Path) -> tuple[Results, columnar.Columnar | None]:
    """For a merge that streams the cases (bench.results.streaming): the file's fields without its cases and
    its matching columnar copy, whose rows are then read one row group at a time; or, where there is no
    matching copy (or it holds non-finite notes), the whole file as load() gives it, and None."""
    path = _results_file(path)
    col = _finite_copy(path)
    if col is not None:
        return _file_fields(col, path), col
    with collector_paused():
        return _load(path), None


def load_for_judging(path: str | Path) -> Results:
    """A results file for compare and gate: from the columnar copy's `judge` column (bench.results.judging)
    when a matching copy has it and no value was non-finite: its cases are then CaseView stand-ins holding only
    what bench.judge reads; otherwise exactly load(path)."""
    path = _results_file(path)
    with collector_paused():
        col = _finite_copy(path)
        data = None if col is None else col.judged_cases()
        if data is None or any(d is None for d in data):
            return _load(path)
        top = _file_fields(col, path)
        return dataclasses.replace(top, cases=tuple(judging.case_view(d) for d in data))


def _results_file(path: str | Path) -> Path:
    """The results.json a path names (itself, or inside the folder it names), checked to be a readable file."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    _check_file(path)
    return path


def _finite_copy(path: Path) -> columnar.Columnar | None:
    """The columnar copy matching results.json, unless there is none or its values were not all finite (their
    notes are checked on the full document, as bench.results.checks does)."""
    col = columnar.read(path)
    return None if col is None or col.header.get(NOTES_KEY) else col


def _file_fields(col: columnar.Columnar, path: Path) -> Results:
    """The copy's file-level fields, checked as in a JSON load (a newer schema is refused), with no cases."""
    try:
        return parse_results({**col.header, "cases": []})
    except ResultsInvalid as exc:
        raise BenchInputError(exc.message, source=str(path), field=exc.where or None) from None


def _check_file(path: Path) -> None:
    try:
        mode = os.stat(path).st_mode  # stat, never open: a FIFO would block, /dev/zero never end
    except FileNotFoundError:
        why = "a link to a missing file" if os.path.islink(path) else "no such results file"
        raise BenchInputError(why, source=str(path)) from None
    except OSError as exc:
        raise BenchInputError(f"cannot read: {exc.strerror}", source=str(path)) from None
    if not stat.S_ISREG(mode):
        raise BenchInputError(f"not a regular file: {file_kind(mode)}", source=str(path))


def open_columnar(path: str | Path) -> columnar.Columnar | None:
    """The matching columnar copy of a results file (or folder), or None (then load() parses the JSON)."""
    path = Path(path)
    return columnar.read(path / RESULTS_FILE if path.is_dir() else path)


def _load_columnar(path: Path) -> Results | None:
    """Results from the columnar copy, or None where the JSON must be read: no matching copy, or values
    that were not finite (their notes are checked on the full document, as bench.results.checks does).

    The file-level fields are checked as in a JSON load (a newer schema is refused); the cases are built
    without the per-field checks: the copy was written by `save` from records it built itself, and its
    fingerprint proves results.json has not changed since."""
    col = _finite_copy(path)
    if col is None:
        return None
    top = _file_fields(col, path)
    groups = col.row_group_rows()
    if two_builders.shareable(groups):
        cases = two_builders.cases(col.path, len(groups))
    else:
        cases = two_builders.records(col.case_data())
    return None if cases is None else dataclasses.replace(top, cases=tuple(cases))


def case_from_file(path: Path) -> CaseResult:
    return from_dict(CaseResult, json.loads(Path(path).read_text(encoding="utf-8")))
