"""--jobs N: several cases at a time, each job's workers pinned to their own cores with that many torch
threads, the same verdicts as one after another, and Ctrl-C still ends the run at once with every running
case marked and its worker gone."""

from __future__ import annotations

import signal

import pytest

from bench.cli.main import main
from bench.errors import BenchInputError
from bench.results.store import load
from bench.runner.jobs import LiveWorkers, core_groups, parse_jobs, usable_cpus
from tests.runner.test_interrupt_resume import _gone, _scenario, _start, _wait_for_hang

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

CPUS = usable_cpus()
needs_two_cores = pytest.mark.skipif(len(CPUS) < 2, reason="pinning two jobs needs two usable cores")


def test_core_groups_are_disjoint_and_cover_the_cores():
    assert core_groups(2, (0, 1)) == [(0,), (1,)]
    assert core_groups(2, (0, 1, 2, 3, 4)) == [(0, 1, 2), (3, 4)]
    assert core_groups(1, (4, 6)) == [(4, 6)]
    for jobs in range(1, 8):
        groups = core_groups(jobs, tuple(range(7)))
        flat = [c for g in groups for c in g]
        assert sorted(flat) == list(range(7)) and len(flat) == len(set(flat)) and all(groups)
    with pytest.raises(ValueError):
        core_groups(3, (0, 1))


def test_parse_jobs():
    assert (
        parse_jobs("1", (0, 1)) == 1 and parse_jobs("auto", (0, 1, 2)) == 3 and parse_jobs(" 2", (0, 1)) == 2
    )
    for text, fragment in [("0", "at least 1"), ("3", "only 2 usable core"), ("two", "whole number")]:
        with pytest.raises(BenchInputError, match=fragment):
            parse_jobs(text, (0, 1))


@pytest.mark.parametrize("text", ["\uff12", "\u0662", "\u09e8", "1_0", "+2", "２\n"])
def test_jobs_takes_ascii_digits_only(text):
    """int() reads a full-width ２ (or an Arabic-Indic ٢, 1_0, +2) as a number: --jobs refuses them (issue 32)."""
    with pytest.raises(BenchInputError, match="whole number"):
        parse_jobs(text, tuple(range(16)))


class _Handle:
    def __init__(self):
        self.killed = 0

    def kill_group(self):
        self.killed += 1


def test_live_workers_kill_the_running_and_any_that_start_after():
    live, a, b, late = LiveWorkers(), _Handle(), _Handle(), _Handle()
    live.started(a)
    live.started(b)
    live.ended(b)  # finished before the signal: not killed
    live.kill_all()
    live.started(late)  # forked just as the signal came: killed as it registers
    assert (a.killed, b.killed, late.killed) == (1, 0, 1)


def test_more_jobs_than_cores_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(_scenario("one"))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--jobs", str(len(CPUS) + 1)]) == 2
    assert "usable core" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before any folder is made


@needs_two_cores
@pytest.mark.slow
def test_jobs_pin_each_case_and_give_the_same_verdicts(tmp_path, cache_root, monkeypatch):
    monkeypatch.setenv("PEFT_BENCH_CACHE", str(cache_root))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    paths = []
    for name in ("c1", "c2", "c3", "c4"):
        paths.append(tmp_path / f"{name}.toml")
        paths[-1].write_text(_scenario(name))
    runs = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        assert main(["run", *map(str, paths), "--out", str(out), "--jobs", str(jobs), "--quiet"]) == 0
        runs[jobs] = load(out)
    one, two = runs[1], runs[2]
    assert (one.jobs, two.jobs) == (1, 2)
    assert [c.verdict for c in two.cases] == [c.verdict for c in one.cases] == ["pass"] * 4
    groups = core_groups(2, CPUS)
    # What each worker read of its own process, not what the parent asked for: pinned to one job's cores,
    # with that many torch threads. The jobs=1 run is the control: its workers see every core.
    assert all(c.worker.cpus in groups and c.worker.torch_threads == len(c.worker.cpus) for c in two.cases)
    assert {c.worker.cpus for c in two.cases} == set(groups)  # both jobs ran cases
    assert all(c.worker.cpus == CPUS for c in one.cases)
    assert two.environment.torch_threads == min(len(g) for g in groups)
    # Two cases really ran at once: some pair of workers overlapped in time.
    spans = [
        (c.worker.finished_at_epoch_s - c.worker.wall_s, c.worker.finished_at_epoch_s) for c in two.cases
    ]
    assert any(a0 < b1 and b0 < a1 for i, (a0, a1) in enumerate(spans) for b0, b1 in spans[i + 1 :]), spans


@needs_two_cores
@pytest.mark.slow
def test_ctrl_c_under_jobs_kills_every_running_worker_and_keeps_the_rest(tmp_path, cache_root):
    paths = []
    for name in ("hang-a", "hang-b", "later"):
        paths.append(tmp_path / f"{name}.toml")
        paths[-1].write_text(_scenario(name))
    out = tmp_path / "out"
    proc = _start([*paths, "--out", out, "--jobs", "2"], cache_root, "hang-a:hang@start,hang-b:hang@start")
    try:
        workers = [_wait_for_hang(out / "cases" / f"{n}_fp32-none.log", proc) for n in ("hang-a", "hang-b")]
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    results = load(out)
    assert results.interrupted and results.jobs == 2
    reasons = {c.scenario: (c.verdict, c.reason) for c in results.cases}
    assert reasons == {
        "hang-a": ("not_run", "interrupted while this case ran (its worker was killed)"),
        "hang-b": ("not_run", "interrupted while this case ran (its worker was killed)"),
        "later": ("not_run", "interrupted before this case ran"),
    }
    assert all(_gone(pid) for pid in workers)
