"""The streaming merge (bench.results.streaming, what `peft-bench merge` runs) writes what the record-based merge
(bench.results.shards.merge, relative_outcomes, store.save and the summary) writes for the same real inputs:
results.json equal after json.load, results.csv byte for byte, the same summary.md, results.parquet's rows
equal, and the same refusals with the same messages."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bench.cli.commands import merge as merge_command
from bench.errors import BenchInputError
from bench.judge.relative import relative_outcomes
from bench.results import columnar
from bench.results.shards import Source, merge
from bench.results.store import load, save
from bench.results.streaming import open_input, plan, write_merged
from bench.results.summary import summary_markdown
from bench.results.writing import Encoded
from bench.spec.codec import to_dict
from tests.engine.test_serving import _with_faster_than, eager_runs  # noqa: F401

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "results"
CREATED = "2026-01-01T00:00:00+00:00"
COMMAND = ("peft-bench", "merge", "out")


def _record_path(out: Path, paths: list[Path]) -> str:
    """Today's merge before streaming: every record loaded, merged, re-decided and saved. Returns summary.md."""
    sources = [Source(str(p), load(p)) for p in paths]
    merged = merge(sources, command=COMMAND, created_at=CREATED)
    jobs = max(s.results.jobs for s in sources)
    merged = dataclasses.replace(merged, cases=relative_outcomes(merged.cases, jobs))
    save(out, merged)
    return summary_markdown(merged, merge_command.summary_head(merged, Path("OUT")))


def _streamed(out: Path, paths: list[Path]) -> str:
    ready = plan(
        [open_input(p, str(p)) for p in paths], command=COMMAND, decide=relative_outcomes, created_at=CREATED
    )
    odd: list[str] = []
    written = write_merged(out, ready, odd=odd.append)
    head = merge_command.summary_head(written.results, Path("OUT")) + merge_command.odd_section(odd)
    return written.summary(head)


def _differences(a: Path, b: Path, summary_a: str, summary_b: str) -> list[str]:
    found = []
    if (a / "results.json").read_bytes() != (b / "results.json").read_bytes():
        found.append("results.json")
    if (a / "results.csv").read_bytes() != (b / "results.csv").read_bytes():
        found.append("results.csv")
    if summary_a != summary_b:
        found.append("summary.md")
    rows_a = pq.read_table(a / columnar.COLUMNAR_FILE).to_pylist()
    if rows_a != pq.read_table(b / columnar.COLUMNAR_FILE).to_pylist():
        found.append("results.parquet")
    if [to_dict(c) for c in load(a).cases] != [to_dict(c) for c in load(b).cases]:
        found.append("loaded records")
    return found


def _halves(tmp_path: Path, name: str, *, nan_in_second: bool = False) -> list[Path]:
    results = load(FIXTURES / name)
    cut = len(results.cases) // 2
    one, two = tmp_path / f"{name}-1", tmp_path / f"{name}-2"
    save(one, dataclasses.replace(results, cases=results.cases[:cut]))
    second = results.cases[cut:]
    if nan_in_second:  # a non-finite value: that file's notes make the merge read its JSON, not its copy
        second = (dataclasses.replace(second[0], wall_s=float("nan")), *second[1:])
    save(two, dataclasses.replace(results, cases=second))
    return [one, two]


@pytest.mark.parametrize("name", ["failing", "noise-a", "train"])
def test_streamed_merge_writes_what_the_record_merge_writes(tmp_path, name):
    paths = _halves(tmp_path, name)
    assert all(columnar.read(p / "results.json") is not None for p in paths)  # the streamed path is taken
    # and every case is copied from its row, none built from its record (their faster_than is not decided)
    assert all(isinstance(c, Encoded) for p in paths for c in open_input(p, str(p)).items())
    a, b = tmp_path / "records", tmp_path / "streamed"
    summary_a, summary_b = _record_path(a, paths), _streamed(b, paths)
    assert _differences(a, b, summary_a, summary_b) == []
    # Negative control: one changed case in the output is told apart.
    doc = json.loads((b / "results.json").read_text())
    doc["cases"][0]["reason"] = "changed"
    (b / "results.json").write_text(json.dumps(doc))
    (b / "results.csv").write_text(
        (b / "results.csv").read_text().replace(doc["cases"][0]["case_id"], "x", 1)
    )
    assert _differences(a, b, summary_a, summary_b + "x")[:3] == ["results.json", "results.csv", "summary.md"]


def test_inputs_without_a_matching_columnar_copy_are_read_whole_with_the_same_result(tmp_path):
    paths = _halves(tmp_path, "failing", nan_in_second=True)
    (paths[0] / columnar.COLUMNAR_FILE).unlink()  # an older file: no copy
    assert open_input(paths[0], "x").col is None and open_input(paths[1], "y").col is None
    a, b = tmp_path / "records", tmp_path / "streamed"
    assert _differences(a, b, _record_path(a, paths), _streamed(b, paths)) == []
    # the second input's copy is passed over for its notes on the non-finite value, not for want of a copy
    assert (paths[1] / columnar.COLUMNAR_FILE).exists()
    assert json.loads((paths[1] / "results.json").read_text())["non_finite"]


def _refusal(call) -> str:
    with pytest.raises(BenchInputError) as exc:
        call()
    return str(exc.value)


@pytest.mark.parametrize("kind", ["duplicate", "suite_version"])
def test_refusals_are_the_record_merges_with_the_same_messages(tmp_path, kind):
    one, two = _halves(tmp_path, "failing")
    if kind == "duplicate":
        paths = [one, two, one]
    else:
        other = load(two)
        save(two, dataclasses.replace(other, suite_version="0.0.1"))
        paths = [one, two]
    expected = _refusal(lambda: merge([Source(str(p), load(p)) for p in paths], command=COMMAND))
    got = _refusal(
        lambda: plan([open_input(p, str(p)) for p in paths], command=COMMAND, decide=relative_outcomes)
    )
    assert got == expected and ("overlap" in got if kind == "duplicate" else "suite version" in got)
    # Control: the same inputs without the fault merge.
    plan(
        [open_input(p, str(p)) for p in (one, _halves(tmp_path / "ok", "failing")[1])],
        command=COMMAND,
        decide=relative_outcomes,
    )


def test_faster_than_is_decided_again_across_inputs_as_the_record_merge_does(tmp_path, eager_runs):  # noqa: F811
    """Real serve cases, the one with `faster_than` in one file and its siblings in the other: the streamed
    merge decides it on its group of siblings, as the record merge does on the whole."""
    mine = _with_faster_than(eager_runs["mixed_batch"], [("reload", 1000.0), ("side_by_side", 1e-6)])
    top = load(FIXTURES / "failing")
    one, two = tmp_path / "one", tmp_path / "two"
    save(one, dataclasses.replace(top, cases=(mine, *top.cases[:2])))
    save(
        two,
        dataclasses.replace(top, cases=(eager_runs["reload"], eager_runs["side_by_side"], *top.cases[2:])),
    )
    a, b = tmp_path / "records", tmp_path / "streamed"
    assert _differences(a, b, _record_path(a, [one, two]), _streamed(b, [one, two])) == []
    merged = {c.case_id: c for c in load(b).cases}
    assert merged[mine.case_id].verdict == "fail" and mine.verdict == "pass"  # decided in the merge
    # Negative control: without the decision the merged file differs.
    c = tmp_path / "undecided"
    ready = plan(
        [open_input(p, str(p)) for p in (one, two)], command=COMMAND, decide=lambda cases, jobs: cases
    )
    write_merged(c, ready)
    assert {x.case_id: x for x in load(c).cases}[mine.case_id].verdict == "pass"
