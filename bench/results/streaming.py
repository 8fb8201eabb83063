"""A merge that streams the cases: each input's cases are read, given their provenance, written and dropped
one at a time, so a merge's memory no longer grows with the cases it joins.

What is written is what bench.results.shards.merge and store.save write for the same inputs (the same checks,
the same records, results.json, results.parquet and results.csv; tests/results/test_streaming_merge.py
compares both paths). The differences are in how:

- An input's cases come from its columnar copy (bench.results.columnar) when it matches its results.json:
  the checks read only the small columns (case_id, verdict, scenario, the parameters), and the records are
  built from the `record` column one row group at a time, while they are written. An input without a
  matching copy (an older, edited or non-finite file) is loaded whole, as before.
- The one decision that spans cases, `faster_than` (bench.judge.relative, passed in as `decide`), is made
  before writing, on only the cases of a scenario, precision and compile setting that holds a case with a
  strategy (its siblings are among them and nowhere else): at most those records are held at once.
- results.csv's rows and summary.md's lines are made as each case is written; the summary's lines are kept
  (a few lines a case) until its text is written.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from bench.results import columnar
from bench.results.atomic import replace_atomically
from bench.results.flat_rows import ROW_FIELDS, case_rows
from bench.results.records import CaseResult, Results
from bench.results.shards import Source, checked, merged_top, with_provenance
from bench.results.store import CSV_FILE, collector_paused, load_streamable
from bench.results.summary import counts_text, steps_lines, summary_text, table_row
from bench.results.writing import save_json_and_columnar
from bench.spec.codec import from_dict

_UNDECIDED = ("error", "skip", "not_run")  # verdicts bench.judge.relative leaves as they are
_LIGHT_COLUMNS = ("case_id", "verdict", "scenario", *columnar.PARAM_COLUMNS)


class LightCase(NamedTuple):
    """What the checks read of a case (its id, verdict, scenario and parameters), from the columnar copy."""

    case_id: str
    verdict: str
    scenario: str
    params: dict[str, Any]


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


def write_merged(out: Path, ready: Plan, *, note: Callable[[CaseResult], None] = lambda case: None) -> Merged:
    """out/results.json, results.parquet and results.csv (in that order, each atomic), the cases streamed
    from the inputs. `note` sees each merged case as it is written."""
    merged = Merged(ready.results)

    def dump_csv(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(ROW_FIELDS)
            cases = _cases(ready, merged, writer, note)
            save_json_and_columnar(out, dataclasses.replace(ready.results, cases=cases))

    with collector_paused():
        replace_atomically(Path(out) / CSV_FILE, dump_csv)
    return merged


def _cases(ready: Plan, merged: Merged, writer, note: Callable) -> Iterator[CaseResult]:
    """Each merged case, in order; its CSV rows, summary lines and counts made as it passes."""
    for i in ready.ordered:
        for case in i.records(ready.decided):
            writer.writerows(case_rows(case))
            merged.cases += 1
            merged.counts[case.verdict] = merged.counts.get(case.verdict, 0) + 1
            merged.unverified += case.verdict == "pass" and any(s.unverified for s in case.steps)
            merged.rows.append(table_row(case))
            lines = steps_lines(case)
            if lines:
                merged.steps.append(["\n".join(lines)])
            note(case)
            yield case
