"""A merge sets each case's provenance in its JSON text (bench.results.shards.with_provenance_text) instead of
building the record: the text must be what encoding the record with_provenance gives, byte for byte, and
where that is not certain the function must decline (None), never guess."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.results import columnar
from bench.results.shards import Source, with_provenance, with_provenance_text
from bench.results.store import load, save
from bench.results.streaming import open_input
from bench.results.writing import Encoded, encode_case
from bench.spec.codec import to_dict

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "results"


def _source(results, **changes) -> Source:
    return Source("shards/part-2/results.json", dataclasses.replace(results, **changes))


@pytest.mark.parametrize("changes", [{}, {"shard": "2/3", "scheduler": {"job_id": "4711"}}])
def test_the_text_is_the_encoded_record_with_provenance(changes):
    results = load(FIXTURES / "failing")
    source = _source(results, **changes)
    for case in results.cases:
        expected = encode_case(with_provenance(case, source))
        assert with_provenance_text(encode_case(case), source) == expected
        assert expected != encode_case(case)  # negative control: the provenance did change the text


def test_a_worker_key_inside_a_string_is_not_a_key():
    results = load(FIXTURES / "failing")
    case = dataclasses.replace(results.cases[0], reason='said "worker": {"pid": 1} in its log')
    source = _source(results)
    assert with_provenance_text(encode_case(case), source) == encode_case(with_provenance(case, source))


def test_it_declines_what_it_cannot_edit_for_certain():
    results = load(FIXTURES / "failing")
    source = _source(results)
    case = results.cases[0]
    # a nested object with a `worker` key: two matches, and which is the case's own is not certain
    nested = dataclasses.replace(case, case={**case.case, "worker": {"pid": 1}})
    assert '"worker": {' in encode_case(nested).split('"worker": {', 1)[1]
    assert with_provenance_text(encode_case(nested), source) is None
    # a worker object that is not what a save of a record writes (a field missing)
    assert with_provenance_text(encode_case(case).replace('"job": null', '"other": null'), source) is None
    assert with_provenance_text(encode_case(case).replace('"worker": {', '"worker_": {'), source) is None


def test_rows_made_from_json_data_are_built_not_copied(tmp_path):
    results = load(FIXTURES / "failing")
    save(tmp_path, results)
    assert all(isinstance(c, Encoded) for c in open_input(tmp_path, "a").items())
    # the same file's copy made from its JSON data (columnar.write) has no CSV text or summary lines
    data = [(to_dict(c), encode_case(c)) for c in results.cases]
    header = columnar.read(tmp_path / "results.json").header
    columnar.write(tmp_path, header, data)
    items = list(open_input(tmp_path, "a").items())
    assert len(items) == len(results.cases) and not any(isinstance(c, Encoded) for c in items)
