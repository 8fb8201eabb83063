"""bench.results.two_builders: a large columnar copy's records built by this process from the first row group
up and a spawned helper from the last one down give the records one process builds; each group is built once,
and what the helper claimed but did not deliver is built here."""

from __future__ import annotations

import multiprocessing
import threading

import pytest

from bench.results import columnar, two_builders
from bench.results.store import load, save
from tests.results.test_scale import _copies

pytest.importorskip("pyarrow")
GROUP_ROWS = 4  # small row groups: a small file with many of them


@pytest.fixture()
def grouped(tmp_path, monkeypatch):
    """A saved file of 40 cases in 10 row groups, and its records as the JSON gives them."""
    monkeypatch.setattr(columnar, "ROW_GROUP_ROWS", GROUP_ROWS)
    results = _copies(40)
    save(tmp_path, results)
    col = columnar.read(tmp_path / "results.json")
    assert col is not None and col.row_group_rows() == [GROUP_ROWS] * 10
    (tmp_path / "results.parquet").rename(tmp_path / "aside.parquet")
    from_json = load(tmp_path).cases  # no columnar copy: the JSON is parsed
    (tmp_path / "aside.parquet").rename(tmp_path / "results.parquet")
    return tmp_path, from_json


def _no_helper_left() -> None:
    assert not [p for p in multiprocessing.active_children() if p.name == "peft-bench-load"]


@pytest.mark.skipif(two_builders.cpus() < 2, reason="the helper is used only with a second CPU")
def test_a_load_with_the_helper_gives_the_records_one_process_builds(grouped, monkeypatch):
    folder, from_json = grouped
    monkeypatch.setattr(two_builders, "MIN_GROUPS", 2)
    calls = []
    real = two_builders.cases
    monkeypatch.setattr(two_builders, "cases", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert load(folder).cases == from_json
    assert calls == [(folder / "results.parquet", 10)]  # the load went through the two builders
    assert real(folder / "results.parquet", 10, helper=False) == list(from_json)
    _no_helper_left()
    # Control: a file with fewer row groups than MIN_GROUPS is streamed in this process alone.
    monkeypatch.setattr(two_builders, "MIN_GROUPS", 11)
    calls.clear()
    assert load(folder).cases == from_json and calls == []


def _claims(groups: int, here: int = 0, helper: int = 0):
    """Shared claims with the first `here` groups held by this process and the last `helper` by the helper."""
    claims = multiprocessing.get_context("spawn").Array("b", groups)
    for g in range(here):
        claims[g] = two_builders.HERE
    for g in range(groups - helper, groups):
        claims[g] = two_builders.HELPER
    return claims


def test_the_helper_builds_from_the_last_group_down_to_the_first_one_held_here(grouped):
    folder, _ = grouped
    path = folder / "results.parquet"
    claims = _claims(10, here=4)
    parent, child = multiprocessing.Pipe()
    helper = threading.Thread(target=two_builders._helper, args=(str(path), 10, claims, child))
    helper.start()
    got = two_builders._received(parent, helper)
    helper.join()
    assert sorted(got) == [4, 5, 6, 7, 8, 9]
    assert list(claims[:]) == [two_builders.HERE] * 4 + [two_builders.HELPER] * 6
    assert all(got[g] == two_builders.built(path, g) for g in got)
    # Control: with nothing held here, the helper builds every group.
    claims, (parent, child) = _claims(10), multiprocessing.Pipe()
    helper = threading.Thread(target=two_builders._helper, args=(str(path), 10, claims, child))
    helper.start()
    assert sorted(two_builders._received(parent, helper)) == list(range(10))
    helper.join()


def test_groups_the_helper_claimed_but_never_delivered_are_built_here(grouped):
    folder, from_json = grouped
    path = folder / "results.parquet"
    claims = _claims(10, helper=3)  # the helper claimed the last three and died before sending any
    parent, child = multiprocessing.Pipe()
    child.close()
    gone = threading.Thread(target=lambda: None)
    gone.start()
    gone.join()
    assert two_builders._received(parent, gone) == {}
    out = two_builders._shared(path, 10, claims, parent, gone)
    assert out == list(from_json)
    assert list(claims[:]) == [two_builders.HERE] * 7 + [two_builders.HELPER] * 3
