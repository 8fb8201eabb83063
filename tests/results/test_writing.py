"""The one-pass writer (bench.results.writing): the file it writes holds what the old writer wrote (the whole
document as dicts, cleaned of NaN, json.dumps(indent=1): finite.encode), the columnar copy's rows built from
the records equal the rows built from the JSON data, and a merge saved and loaded back is the merge in memory."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.results import columnar, judging
from bench.results.failures import failure_line
from bench.results.finite import encode
from bench.results.flat_rows import case_csv, to_csv
from bench.results.records import Results
from bench.results.shards import Source, merge
from bench.results.store import load, save
from bench.results.summary import steps_lines, table_row
from bench.results.writing import _fields, encode_case, record_row
from bench.spec.codec import to_dict

REPO = Path(__file__).resolve().parents[2]
FILES = [REPO / "reports" / "baseline", *sorted((REPO / "tests" / "fixtures" / "results").iterdir())]
IDS = [p.name for p in FILES]


def _old_document(results: Results) -> dict:
    """What the writer before bench.results.writing wrote: finite.encode of the whole document."""
    return json.loads(encode(to_dict(results)))


def _with_non_finite(results: Results) -> Results:
    """NaN in a case's step and an infinity in a file-level field and another case: the writer's slow path."""
    first, second = results.cases[0], results.cases[-1]
    step = dataclasses.replace(first.steps[0], op_time_ms=math.nan)
    cases = (
        dataclasses.replace(first, steps=(step, *first.steps[1:])),
        *results.cases[1:-1],
        dataclasses.replace(second, wall_s=-math.inf),
    )
    return dataclasses.replace(results, cases=cases, parent_cpu_s=math.inf)


@pytest.mark.parametrize("folder", FILES, ids=IDS)
def test_the_file_holds_what_the_old_writer_wrote(tmp_path, folder):
    results = load(folder)
    save(tmp_path, results)
    text = (tmp_path / "results.json").read_text()
    assert json.loads(text) == _old_document(results)
    # One case per line: the C encoder's compact text, each case whole on its line.
    assert sum(line.startswith('{"case_id": ') for line in text.splitlines()) == len(results.cases)


def test_non_finite_values_are_noted_as_the_old_writer_noted_them(tmp_path):
    results = _with_non_finite(load(FILES[0]))
    save(tmp_path, results)
    new = json.loads((tmp_path / "results.json").read_text())
    old = _old_document(results)
    assert new == old
    assert list(new["non_finite"].items()) == list(old["non_finite"].items())  # the same order too
    assert set(old["non_finite"]) == {
        "cases[0].steps[0].op_time_ms",
        f"cases[{len(results.cases) - 1}].wall_s",
        "parent_cpu_s",
    }
    assert load(tmp_path).non_finite == old["non_finite"]  # read back with the notes (the JSON path)


def test_the_comparison_with_the_old_writer_can_fail(tmp_path):
    # Negative control: a file that differs in one value from the records is told apart.
    results = load(FILES[0])
    save(tmp_path, results)
    changed = dataclasses.replace(
        results, cases=(dataclasses.replace(results.cases[0], reason="x"), *results.cases[1:])
    )
    assert json.loads((tmp_path / "results.json").read_text()) != _old_document(changed)


@pytest.mark.parametrize("folder", FILES, ids=IDS)
def test_rows_from_the_records_equal_rows_from_the_json_data(folder):
    for case in load(folder).cases:
        text = encode_case(case)
        assert text == json.dumps(to_dict(case), allow_nan=False)
        data = json.loads(text)
        row, extra = len(columnar.COLUMNS) - len(columnar.PASS_THROUGH_COLUMNS), columnar.PASS_THROUGH_COLUMNS
        assert record_row(case, text)[:row] == columnar.row_of_data(data, text)[:row]
        # what a merge copies is made from records only: a row made from JSON data has none of it
        assert columnar.row_of_data(data, text)[row:] == (None,) * len(extra)
        assert record_row(case, text)[row:] == (
            case_csv(case),
            table_row(case),
            "\n".join(steps_lines(case)),
            "" if case.verdict == "pass" else failure_line(case),
        )
        by_record = json.dumps(judging.reduce_record(case), separators=(",", ":"))
        assert by_record == json.dumps(judging.reduce_case(data), separators=(",", ":"))


def test_a_changed_record_gives_another_judge_row():
    # Negative control for the test above: the rows compare what the case holds.
    case = load(FILES[0]).cases[0]
    data = json.loads(encode_case(case))
    step = dataclasses.replace(case.steps[0], status="fail")
    other = dataclasses.replace(case, steps=(step, *case.steps[1:]))
    assert judging.reduce_record(other) != judging.reduce_case(data)
    assert encode_case(dataclasses.replace(case, wall_s=math.nan)) is None  # the slow path's signal


@dataclasses.dataclass(frozen=True)
class _Cached:
    a: int
    b: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache", self.a * 2)  # not a field: must not be written


@dataclasses.dataclass(frozen=True, slots=True)
class _Slotted:
    a: int
    b: tuple[int, ...]


def test_records_are_encoded_by_their_fields_only():
    for record in (_Cached(1, "x"), _Slotted(2, (3, 4))):
        assert json.loads(json.dumps(record, default=_fields)) == to_dict(record)
    assert json.loads(json.dumps(_Cached(1, "x"), default=lambda r: r.__dict__)) != to_dict(_Cached(1, "x"))
    with pytest.raises(TypeError):
        json.dumps({1, 2}, default=_fields)  # anything else is refused, as json.dumps refuses it


def _halves(folder: Path) -> tuple[Results, Results]:
    results = load(folder)
    cases = results.cases
    one = dataclasses.replace(results, cases=cases[: len(cases) // 2])
    return one, dataclasses.replace(results, cases=cases[len(cases) // 2 :])


def test_a_saved_merge_loads_back_as_the_merge_in_memory(tmp_path):
    one, two = _halves(FILES[0])
    for name, part in (("one", one), ("two", two)):
        save(tmp_path / name, part)
    sources = [Source(str(tmp_path / n), load(tmp_path / n)) for n in ("one", "two")]
    merged = merge(sources, command=("merge",), created_at="2026-01-01T00:00:00+00:00")
    save(tmp_path / "out", merged)
    assert columnar.read(tmp_path / "out" / "results.json") is not None  # the columnar path is what loads
    assert to_dict(load(tmp_path / "out")) == to_dict(merged)
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == _old_document(merged)
    (tmp_path / "out" / columnar.COLUMNAR_FILE).unlink()  # and the JSON path too
    assert to_dict(load(tmp_path / "out")) == to_dict(merged)


def test_a_copy_with_its_metadata_in_the_schema_is_still_read(tmp_path):
    # Copies written before columnar.Sink kept the header and fingerprint in the Arrow schema's metadata.
    save(tmp_path, load(FILES[0]))
    path = tmp_path / columnar.COLUMNAR_FILE
    meta = {k: v for k, v in pq.read_metadata(path).metadata.items() if k != b"ARROW:schema"}
    table = pq.read_table(path)
    pq.write_table(pa.Table.from_batches(table.to_batches(), table.schema.with_metadata(meta)), path)
    assert columnar.read(tmp_path / "results.json") is not None
    meta[columnar.META_SOURCE] = json.dumps({"size": 1, "mtime_ns": 1, "sha256": ""}).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)
    assert columnar.read(tmp_path / "results.json") is None  # control: another file's fingerprint is not


def test_without_pyarrow_the_json_is_written_and_an_old_copy_removed(tmp_path, monkeypatch):
    results = load(FILES[0])
    save(tmp_path, results)
    assert (tmp_path / columnar.COLUMNAR_FILE).exists()  # control: with pyarrow, a copy
    monkeypatch.setattr(columnar, "available", lambda: False)
    save(tmp_path, results)
    assert not (tmp_path / columnar.COLUMNAR_FILE).exists()
    assert json.loads((tmp_path / "results.json").read_text()) == _old_document(results)


@pytest.mark.parametrize("pyarrow", [True, False], ids=["with-pyarrow", "without-pyarrow"])
@pytest.mark.parametrize("folder", FILES, ids=IDS)
def test_results_csv_is_the_rows_made_apart_from_the_save(tmp_path, monkeypatch, folder, pyarrow):
    # save writes each case's CSV rows with its JSON (from the columnar row's CSV text, or made there for a
    # non-finite case or without pyarrow): the file must be what the flat rows give on their own.
    results = _with_non_finite(load(folder))
    monkeypatch.setattr(columnar, "available", lambda: pyarrow)
    save(tmp_path, results)
    assert (tmp_path / "results.csv").read_text() == to_csv(results)
    # negative control: a changed value in a case is a changed file
    changed = dataclasses.replace(
        results, cases=(dataclasses.replace(results.cases[1], verdict="fail"), *results.cases[2:])
    )
    assert (tmp_path / "results.csv").read_text() != to_csv(changed)
