"""A merge that streams the cases: each input's cases are read, given their provenance, written and dropped
one at a time, so a merge's memory no longer grows with the cases it joins.

What is written is what bench.results.shards.merge and store.save write for the same inputs (the same checks,
the same records, results.json, results.parquet and results.csv; tests/results/test_streaming_merge.py
compares both paths). The differences are in how:

- An input's cases come from its columnar copy (bench.results.columnar) when it matches its results.json:
  the checks read only the small columns (case_id, verdict, scenario, the parameters), and the cases are
  read one row group at a time, while they are written. An input without a matching copy (an older, edited
  or non-finite file) is loaded whole, as before.
- A case is copied, not built: its row's JSON text gets its provenance in place
  (bench.results.shards.with_provenance_text), and its judge column, results.csv rows, summary lines and
  failure line, which name nothing of where it ran, are copied as the save that wrote the row made them
  from the record. A record is built only where that cannot be done (a row made from JSON data, a
  non-finite value, a worker object a save would not write) and for a case whose faster_than is decided
  again.
- The one decision that spans cases, `faster_than` (bench.judge.relative, passed in as `decide`), is made
  before writing, on only the cases of a scenario, precision and compile setting that holds a case with a
  strategy (its siblings are among them and nowhere else): at most those records are held at once.
- results.csv's rows and summary.md's lines are made as each case is written; the summary's lines are kept
  (a few lines a case) until its text is written.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from bench.results import columnar
from bench.results.atomic import replace_atomically
from bench.results.collector import collector_paused
from bench.results.failures import failure_line
from bench.results.flat_rows import write_header
from bench.results.records import CaseResult, Results
from bench.results.shards import Source, checked, merged_top, with_provenance, with_provenance_text
from bench.results.store import CSV_FILE, load_streamable
from bench.results.summary import counts_text, steps_lines, summary_text, table_row
from bench.results.writing import Encoded, save_json_and_columnar
from bench.spec.codec import from_dict

_UNDECIDED = ("error", "skip", "not_run")  # verdicts bench.judge.relative leaves as they are
_LIGHT_COLUMNS = ("case_id", "verdict", "scenario", *columnar.PARAM_COLUMNS)


class LightCase(NamedTuple):
    """What the checks read of a case (its id, verdict, scenario and parameters), from the columnar copy."""

    case_id: str
    verdict: str
    scenario: str
    params: dict[str, Any]


_AT = {name: i for i, name in enumerate(columnar.COLUMNS)}
# What summary.md takes of a copied case's row (made from the record at its save).
_SUMMARY_COLUMNS = ("verdict", "unverified", "summary_row", "summary_steps", "failure_line")


def _copied(row: tuple, source: Source) -> Encoded | None:
    """The case of a columnar row, copied: its text with its provenance set (bench.results.shards.
    with_provenance_text) and its row with that text, whose other columns (the judge column, results.csv rows,
    summary and failure lines) the save that wrote it made from the record. None where its record must be
    built: a case with non-finite values (written the old way), a row made from JSON data (no CSV text or
    summary lines), or a text whose worker object cannot be edited in place."""
    if row[_AT["non_finite"]] or any(row[_AT[n]] is None for n in columnar.PASS_THROUGH_COLUMNS):
        return None
    text = with_provenance_text(row[_AT["record"]], source)
    if text is None:
        return None
    at = _AT["record"]
    return Encoded(text, (*row[:at], text, *row[at + 1 :]))


@dataclasses.dataclass(frozen=True)
class Input:
    """One input: `source.results` holds its file-level fields and LightCase cases (or, where `col` is None,
    its whole loaded file)."""

    source: Source
    col: columnar.Columnar | None

    def records(self, known: Mapping[str, CaseResult] = MappingProxyType({})) -> Iterator[CaseResult]:
        """Each case with its provenance, in file order; a case whose id is in `known` is that record, and
        its own is not read again (a decided case would otherwise be parsed and built twice)."""
        if self.col is None:
            for case in self.source.results.cases:
                yield known.get(case.case_id) or with_provenance(case, self.source)
            return
        for case_id, data in self.col.case_data_but(known):
            yield (
                known[case_id] if data is None else with_provenance(from_dict(CaseResult, data), self.source)
            )

    def items(self, known: Mapping[str, CaseResult] = MappingProxyType({})) -> Iterator[CaseResult | Encoded]:
        """records(), but a case whose columnar row can be copied as it is (with its provenance set) comes as
        Encoded: neither parsed nor built, nor encoded again. Rows are copyable from a file whose columns are
        today's (columnar.Columnar.copyable)."""
        if self.col is None or not self.col.copyable():
            yield from self.records(known)
            return
        for row in self.col.row_tuples():
            case_id = row[0]
            if case_id in known:
                yield known[case_id]
                continue
            copied = _copied(row, self.source)
            if copied is None:
                data = json.loads(row[_AT["record"]])
                yield with_provenance(from_dict(CaseResult, data), self.source)
            else:
                yield copied


@dataclasses.dataclass
class Merged:
    """What the summary and the command's lines need of the written merge."""

    results: Results  # the file-level fields; no cases
    cases: int = 0
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    unverified: int = 0
    rows: list[str] = dataclasses.field(default_factory=list)
    steps: list[list[str]] = dataclasses.field(default_factory=list)

    def summary(self, head: list[str]) -> str:
        counts = counts_text(self.counts, self.unverified)
        return summary_text(self.results, counts, head, self.rows, self.steps)


def open_input(path: str | Path, shown: str) -> Input:
    """`shown`: the path as the user gave it (what provenance and messages name)."""
    top, col = load_streamable(path)
    if col is None:
        return Input(Source(shown, top), None)
    c = col.column_lists(_LIGHT_COLUMNS)
    names = columnar.PARAM_COLUMNS
    params = [dict(zip(names, p, strict=True)) for p in zip(*(c[k] for k in names), strict=True)]
    light = tuple(map(LightCase, c["case_id"], c["verdict"], c["scenario"], params))
    return Input(Source(shown, dataclasses.replace(top, cases=light)), col)


def _group(case: Any) -> tuple:
    return (case.scenario, case.params.get("precision"), case.params.get("compile"))


def _decided(ordered: list[Input], decide: Callable, jobs: int) -> dict[str, CaseResult]:
    """The cases whose faster_than outcomes `decide` may change, decided over every case that can be their
    sibling (bench.judge.relative.sibling_index: the same scenario, precision and compile), by case_id."""
    groups = {
        _group(c)
        for i in ordered
        for c in i.source.results.cases
        if c.params.get("strategy") and c.verdict not in _UNDECIDED
    }
    if not groups:
        return {}
    subset = tuple(
        r
        for i in ordered
        if any(_group(c) in groups for c in i.source.results.cases)
        for r in i.records()
        if _group(r) in groups
    )
    return {c.case_id: c for c in decide(subset, jobs)}


@dataclasses.dataclass(frozen=True)
class Plan:
    """Checked inputs, ready to write: in merge order, with the file-level fields and the cases whose
    faster_than outcomes were decided again."""

    ordered: list[Input]
    results: Results  # the merged file-level fields; no cases
    decided: dict[str, CaseResult]


def plan(
    inputs: list[Input],
    *,
    command: tuple[str, ...],
    decide: Callable[[tuple[CaseResult, ...], int], tuple[CaseResult, ...]],
    created_at: str | None = None,
) -> Plan:
    """The checks of bench.results.shards.merge (BenchInputError as it raises it) and the faster_than
    decisions, before anything is written."""
    by_source = {id(i.source): i for i in inputs}
    ordered = [by_source[id(s)] for s in checked([i.source for i in inputs])]
    top = merged_top([i.source for i in ordered], command=command, created_at=created_at)
    with collector_paused():
        decided = _decided(ordered, decide, max(i.source.results.jobs for i in inputs))
    return Plan(ordered, top, decided)


def write_merged(out: Path, ready: Plan, *, odd: Callable[[str], None] = lambda line: None) -> Merged:
    """out/results.json, results.parquet and results.csv (in that order, each atomic), the cases streamed
    from the inputs. `odd` gets the failure line (bench.results.failures.failure_line) of each merged case
    that is not a plain pass, as it is written."""
    merged = Merged(ready.results)

    def dump_csv(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            write_header(f)
            cases = _cases(ready, merged, odd)
            save_json_and_columnar(out, dataclasses.replace(ready.results, cases=cases), f)

    with collector_paused():
        replace_atomically(Path(out) / CSV_FILE, dump_csv)
    return merged


def _cases(ready: Plan, merged: Merged, odd: Callable) -> Iterator[CaseResult | Encoded]:
    """Each merged case, in order (a copied one as its Encoded text and row); its summary lines and counts made
    as it passes (its CSV rows are written with it: bench.results.writing)."""
    for i in ready.ordered:
        for item in i.items(ready.decided):
            if isinstance(item, Encoded):
                verdict, unverified, row, steps, failure = (item.row[_AT[n]] for n in _SUMMARY_COLUMNS)
            else:
                verdict, unverified = item.verdict, any(s.unverified for s in item.steps)
                row, steps = table_row(item), "\n".join(steps_lines(item))
                failure = failure_line(item)  # "" for a plain pass
            merged.cases += 1
            merged.counts[verdict] = merged.counts.get(verdict, 0) + 1
            merged.unverified += verdict == "pass" and unverified
            merged.rows.append(row)
            if steps:
                merged.steps.append([steps])
            if failure:  # a case that is not a plain pass (an unverified pass has a line too)
                odd(failure)
            yield item
