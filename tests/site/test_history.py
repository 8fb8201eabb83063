"""The history's pure parts on small built runs: ordering and ids, what changed, verdict changes across gaps and
across verdict rules, the host name left out of the changes unless asked."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from bench.errors import BenchInputError
from bench.report.site import history
from bench.results.records import CaseResult, Results, WorkerInfo
from bench.results.runs import (
    load_runs,
    run_id,
    started_at,
    without_hostname,
    write_results_json,
)
from bench.results.store import load, save
from tests.conftest import fixed_environment

ENV = fixed_environment(hostname="box-a")


def _results(when: str, verdicts: dict[str, str], rules: int = 3, **libs: str) -> Results:
    cases = tuple(
        CaseResult(cid, cid.split("[")[0], "scenarios/x.toml", {}, v, "" if v == "pass" else "why")
        for cid, v in verdicts.items()
    )
    env = dataclasses.replace(ENV, libraries={**ENV.libraries, **libs})
    return Results(1, "0.1.0", when, env, ("x",), cases, verdict_rules=rules)


def _runs(tmp_path, *results: Results):
    paths = []
    for i, r in enumerate(results):
        save(tmp_path / f"r{i}", r)
        paths.append(tmp_path / f"r{i}")
    return load_runs(paths)


def test_runs_are_ordered_by_start_and_a_run_given_twice_is_kept_once(tmp_path):
    late = _results("2026-03-01T00:00:00+00:00", {"a[x]": "pass"})
    early = _results("2026-01-01T00:00:00+00:00", {"a[x]": "fail"})
    runs = _runs(tmp_path, late, early, late)
    assert [r.results.created_at[:7] for r in runs] == ["2026-01", "2026-03"]
    assert runs[0].run_id.startswith("20260101T000000Z-") and runs[0].date == "2026-01-01"


def test_the_run_id_does_not_depend_on_the_host_name():
    r = _results("2026-01-01T00:00:00+00:00", {"a[x]": "pass"})
    other = dataclasses.replace(r, environment=dataclasses.replace(r.environment, hostname="box-b"))
    when = started_at(r, "x")
    assert run_id(r, when) == run_id(other, when)
    changed = _results("2026-01-01T00:00:00+00:00", {"a[x]": "fail"})
    assert run_id(changed, when) != run_id(r, when)  # control: content counts


def test_without_hostname_empties_every_host_field():
    r = _results("2026-01-01T00:00:00+00:00", {"a[x]": "pass"})
    case = dataclasses.replace(r.cases[0], worker=WorkerInfo(hostname="box-a", shard="1/2"))
    r = dataclasses.replace(r, cases=(case,), scheduler={"kind": "slurm", "node": "box-a", "job_id": "7"})
    clean = without_hostname(r)
    assert "box-a" not in repr(clean) and "box-a" in repr(r)
    assert clean.cases[0].worker.shard == "1/2" and clean.scheduler == {"kind": "slurm", "job_id": "7"}


def test_a_kubernetes_pods_name_is_a_host_name():
    r = _results("2026-01-01T00:00:00+00:00", {"a[x]": "pass", "b[x]": "pass"})
    pod = "bench-0-xk2p"
    cases = (
        dataclasses.replace(r.cases[0], worker=WorkerInfo(hostname=pod, job=pod)),
        dataclasses.replace(r.cases[1], worker=WorkerInfo(job="123_4")),  # a Slurm job id is not a host
    )
    sched = {"kind": "kubernetes", "job_id": pod, "completion_index": "0"}
    clean = without_hostname(dataclasses.replace(r, cases=cases, scheduler=sched))
    assert pod not in repr(clean) and clean.scheduler == {"kind": "kubernetes", "completion_index": "0"}
    assert clean.cases[1].worker.job == "123_4"


def test_a_bad_time_is_named():
    r = _results("yesterday", {"a[x]": "pass"})
    with pytest.raises(BenchInputError, match="x: created_at: not an ISO 8601 time"):
        started_at(r, "x")


def test_environment_changes_name_the_libraries_first_and_the_host_only_when_asked():
    a = _results("2026-01-01T00:00:00+00:00", {}, rules=1)
    b = _results("2026-01-02T00:00:00+00:00", {}, transformers="5.24.0")
    b = dataclasses.replace(b, environment=dataclasses.replace(b.environment, hostname="box-b"))
    assert history.environment_changes(a, b) == ("transformers 5.23.0 -> 5.24.0", "verdict rules 1 -> 3")
    assert "hostname box-a -> box-b" in history.environment_changes(a, b, with_hostname=True)
    assert history.environment_changes(a, a) == ()


def test_verdict_changes_skip_runs_without_the_case_and_flag_a_change_of_rules(tmp_path):
    runs = _runs(
        tmp_path,
        _results("2026-01-01T00:00:00+00:00", {"a[x]": "pass", "b[x]": "pass"}, rules=1),
        _results("2026-01-02T00:00:00+00:00", {"b[x]": "pass"}, rules=1),
        _results("2026-01-03T00:00:00+00:00", {"a[x]": "fail", "b[x]": "pass"}, rules=1),
        _results("2026-01-04T00:00:00+00:00", {"a[x]": "pass", "b[x]": "xfail"}, rules=3),
    )
    cols = history.columns(runs)
    assert history.verdict_matrix(cols)["a[x]"] == ("pass", None, "fail", "pass")
    changes = [(c.case_id, c.was, c.now, c.comparable) for c in history.verdict_changes(cols)]
    assert changes == [
        ("a[x]", "pass", "fail", True),  # run 1 -> run 3: run 2 did not have it
        ("a[x]", "fail", "pass", False),
        ("b[x]", "pass", "xfail", False),
    ]
    assert [c.stale for c in cols] == [True, True, True, False]


def test_drawn_cases_are_those_whose_figures_moved_most():
    from bench.report.site.history import Trend, drawn_cases, moved

    steady = Trend("a-steady", "latency_ms_median", "ms", {"step 1 forward": (2.0, 2.0, 2.0)})
    doubled = Trend("b-doubled", "latency_ms_median", "ms", {"step 1 forward": (2.0, None, 4.0)})
    halved = Trend("c-halved", "rss_peak_bytes", "bytes", {"case": (10.0, 5.0)})
    alone = Trend("d-one-run", "latency_ms_median", "ms", {"step 1 forward": (None, 7.0)})
    assert moved(steady) == 0 and moved(doubled) == 1.0 and moved(halved) == 0.5 and moved(alone) == 0
    trends = [steady, doubled, halved, alone]
    assert drawn_cases(trends, 2) == ["b-doubled", "c-halved"]
    assert drawn_cases(trends, 10) == ["b-doubled", "c-halved", "a-steady", "d-one-run"]  # ties: case order
    # a case's largest movement over its metrics counts: a second metric that moved puts it first
    assert drawn_cases([*trends, Trend("a-steady", "first_call_ms", "ms", {"s": (1.0, 9.0)})], 1) == [
        "a-steady"
    ]


def test_a_run_id_hashes_the_results_json_text_without_the_host_and_the_copy_is_that_text(tmp_path):
    save(tmp_path / "a", _results("2026-01-01T00:00:00+00:00", {"c[x]": "pass"}))
    r = load(tmp_path / "a")
    when = started_at(r, "a")
    # the text save writes, the host's name left out (this run names it only as the environment's hostname)
    text = (tmp_path / "a" / "results.json").read_text()
    assert text.count('"box-a"') == 1
    text = text.replace('"box-a"', '""')
    assert run_id(r, when).endswith("-" + hashlib.sha256(text.encode()).hexdigest()[:8])
    # the copy a site or dataset publishes is that text, and reads back as the same run
    write_results_json(tmp_path / "copy.json", without_hostname(r))
    assert (tmp_path / "copy.json").read_text() == text
    assert load(tmp_path / "copy.json") == without_hostname(r)


def test_a_spooled_run_keeps_its_id_and_its_text_is_the_copy_a_site_publishes(tmp_path):
    """load_runs' spool: each run's hashed text in a file (Run.text) that a site moves into place instead of
    encoding every case again. The ids are those without a spool; each text is write_results_json's copy,
    byte for byte; a run given twice is kept once."""
    late = _results("2026-03-01T00:00:00+00:00", {"a[x]": "pass"})
    early = _results("2026-01-01T00:00:00+00:00", {"a[x]": "fail", "b[x]": "pass"})
    paths = []
    for i, r in enumerate((late, early, late)):
        save(tmp_path / f"r{i}", r)
        paths.append(tmp_path / f"r{i}")
    spool = tmp_path / "spool"
    spool.mkdir()
    spooled = load_runs(paths, spool)
    plain = load_runs(paths)
    assert [r.run_id for r in spooled] == [r.run_id for r in plain] and len(spooled) == 2
    assert all(r.text is None for r in plain)
    for run in spooled:
        write_results_json(tmp_path / "copy.json", without_hostname(run.results))
        assert run.text.read_bytes() == (tmp_path / "copy.json").read_bytes()
        assert b"box-a" not in run.text.read_bytes()  # the host's name left out, as in the id
        assert run.text.parent == spool


def _two_runs(tmp_path) -> tuple[list, dict[str, bytes]]:
    """Two saved runs and each one's copy as write_results_json writes it (host's name left out)."""
    save(tmp_path / "r0", _results("2026-01-01T00:00:00+00:00", {"a[x]": "pass"}))
    save(tmp_path / "r1", _results("2026-02-01T00:00:00+00:00", {"a[x]": "fail"}))
    expected = {}
    for run in load_runs([tmp_path / "r0", tmp_path / "r1"]):
        write_results_json(tmp_path / f"{run.run_id}.json", without_hostname(run.results))
        expected[run.run_id] = (tmp_path / f"{run.run_id}.json").read_bytes()
    return [str(tmp_path / "r0"), str(tmp_path / "r1")], expected


@pytest.mark.parametrize("command, out_flag", [("site", "--out"), ("publish", "--to")])
def test_site_and_publish_encode_each_run_once_and_leave_no_spool(tmp_path, monkeypatch, command, out_flag):
    """Their results.json copies are the spooled texts (write_results_json is not called), the bytes it would
    have written; nothing is left beside the folder (no spool, no staging folder)."""
    from bench.cli.main import main
    from bench.results import runs as runs_module

    inputs, expected = _two_runs(tmp_path)
    calls = []
    monkeypatch.setattr(runs_module, "write_results_json", lambda *a: calls.append(a))
    out = tmp_path / "pub" / "folder"
    assert main([command, *inputs, out_flag, str(out)]) == 0
    assert calls == []  # nothing encoded a second time
    assert {p.parent.name: p.read_bytes() for p in out.glob("runs/*/results.json")} == expected
    assert sorted(p.name for p in out.parent.iterdir()) == ["folder"]


def test_a_site_with_the_host_name_or_a_failed_one_leaves_no_spool(tmp_path, monkeypatch):
    """With the host's name asked for, the copies are written from the records (a spooled text leaves it
    out); a failed build removes the spool too."""
    from bench.cli.main import main
    from bench.report.site import build
    from bench.results import runs as runs_module

    inputs, _ = _two_runs(tmp_path)
    calls = []
    monkeypatch.setattr(runs_module, "write_results_json", lambda *a: calls.append(a))
    assert main(["site", inputs[0], "--out", str(tmp_path / "pub" / "named"), "--with-hostname"]) == 0
    assert len(calls) == 1 and sorted(p.name for p in (tmp_path / "pub").iterdir()) == ["named"]
    monkeypatch.setattr(build, "write_reports", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "full")))
    assert main(["site", inputs[0], "--out", str(tmp_path / "pub" / "failed")]) != 0
    assert sorted(p.name for p in (tmp_path / "pub").iterdir()) == ["named"]


def test_a_spooled_text_on_another_file_system_is_copied_whole(tmp_path, monkeypatch):
    """Where the rename fails (a spool on another file system), the text is copied into place instead."""
    import errno

    from bench.results import runs as runs_module

    inputs, expected = _two_runs(tmp_path)
    spool = tmp_path / "spool"
    spool.mkdir()
    (run, _) = load_runs([tmp_path / "r0", tmp_path / "r1"], spool)
    real = runs_module.os.replace
    crossed = []

    def cross_device(src, dst):
        if Path(src) == run.text:
            crossed.append(src)
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real(src, dst)

    monkeypatch.setattr(runs_module.os, "replace", cross_device)
    runs_module.place_results_json(
        tmp_path / "site" / "results.json", runs_module.for_publishing([run], False)[0]
    )
    assert crossed and (tmp_path / "site" / "results.json").read_bytes() == expected[run.run_id]
