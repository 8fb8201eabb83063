"""bench.results.fastjson: the columnar copy's texts parse to the same values with orjson as with the standard
library, on a real saved file, and a load gives the same records either way; what orjson would read
differently (an integer beyond 64 bits) cannot reach a saved file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli.main import main
from bench.results import columnar, fastjson
from bench.results.store import load, save

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "reports" / "baseline" / "results.json"
SERVING = REPO / "reports" / "serving-cpu" / "results.json"

orjson = pytest.importorskip("orjson")  # the test extra installs it; without it there is one parser


def _texts(folder: Path, column: str) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(folder / columnar.COLUMNAR_FILE, columns=[column]).column(0).to_pylist()


@pytest.mark.parametrize("src", [BASELINE, SERVING], ids=["baseline", "serving"])
def test_both_parsers_read_the_saved_texts_alike(src, tmp_path):
    save(tmp_path, load(src))
    for column in ("record", "judge"):
        text = "[" + ",".join(_texts(tmp_path, column)) + "]"
        fast, plain = fastjson.loads(text), json.loads(text)
        assert fast == plain
        assert repr(fast) == repr(plain)  # the types too: 5.0 stays a float, 5 an int


def test_a_load_gives_the_same_records_without_orjson(tmp_path, monkeypatch):
    save(tmp_path, load(SERVING))
    assert columnar.read(tmp_path / "results.json") is not None  # the copy is what both loads read
    fast = load(tmp_path)
    monkeypatch.setattr(fastjson, "orjson", None)  # as where orjson is not installed
    assert load(tmp_path) == fast


def test_a_text_orjson_refuses_goes_to_the_standard_library():
    # NaN is outside JSON: orjson refuses it, `json` reads it. The fallback keeps json's behaviour.
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads("[NaN]")
    out = fastjson.loads("[NaN, 1]")
    assert out[1] == 1 and out[0] != out[0]
    with pytest.raises(json.JSONDecodeError):  # and json's own error where neither reads it
        fastjson.loads("[1,")


def test_orjson_reads_a_huge_integer_as_a_float():
    # Why bench.results.checks refuses integers beyond 64 bits in free-form fields too. If orjson ever reads
    # them exactly, this fails and the refusal can be reconsidered.
    assert orjson.loads("[18446744073709551615]") == [2**64 - 1]  # unsigned 64 bits: still an integer
    big = orjson.loads("[123456789012345678901234567890]")[0]
    assert isinstance(big, float)


def test_a_results_file_with_a_huge_integer_in_args_is_refused(tmp_path, capsys):
    data = json.loads(BASELINE.read_text())
    data["cases"][0]["steps"][0]["args"]["rank"] = 10**30
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps(data))
    assert main(["merge", str(tmp_path / "merged"), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "cases[0].steps[0].args.rank: integer out of range (more than 64 bits)" in err
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("kind", ["string", "large_string"])
def test_a_column_is_parsed_from_its_buffer_as_from_its_texts(kind):
    """columnar._parsed_column reads each text straight from the Arrow column's data buffer (orjson): the
    values equal those of the texts parsed one by one, for a column that is a slice of a larger one (its
    offsets start past 0) too, a text orjson refuses included."""
    import pyarrow as pa

    texts = ['{"a": 1, "b": "\u00e9"}', '{"a": [1.5, null]}', "[NaN]", '{"c": {}}', '"x"']
    whole = pa.array(texts, type=getattr(pa, kind)())
    for column in (whole, whole.slice(2), whole.slice(1, 3)):
        expected = [json.loads(t) for t in column.to_pylist()]
        got = columnar._parsed_column(column)
        assert repr(got) == repr(expected)
    # Control: a column with a missing text is parsed through its texts, as before (the null is refused there).
    with pytest.raises(TypeError):
        columnar._parsed_column(pa.array(['{"a": 1}', None], type=getattr(pa, kind)()))
