"""Issue 16, the run itself: options checked before anything runs, and signals that never lose results.

Each test names its negative control: the planted bug (or the old behaviour) that it catches.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.cli.options import MAX_TIMEOUT_S, MIB, memory_limit_bytes, timeout_seconds
from bench.errors import BenchInputError
from bench.worker import inject
from tests.conftest import REPO
from tests.runner.test_interrupt_resume import _scenario, _wait_for_hang

# ---------------------------------------------------------------------------------------------------------
# Options checked up front (exit 2, nothing written)


@settings(max_examples=200, deadline=None)
@given(
    mb=st.integers(-(10**18), 10**18) | st.integers(-5, 5) | st.integers(20_000, 30_000),
    machine_mb=st.integers(1, 10**7),
    hard=st.sampled_from([resource.RLIM_INFINITY, 4096 * MIB, 2**63 - 1]),
)
def test_memory_limit_rule(mb, machine_mb, hard):
    """200 generated (limit, machine size, hard limit) triples: accepted exactly when 0 < limit <= both."""
    ok = mb > 0 and mb <= machine_mb and (hard == resource.RLIM_INFINITY or mb * MIB <= hard)
    if ok:
        assert memory_limit_bytes(mb, machine_bytes=machine_mb * MIB, hard_limit_bytes=hard) == mb * MIB
    else:
        with pytest.raises(BenchInputError, match="--memory-limit-mb"):
            memory_limit_bytes(mb, machine_bytes=machine_mb * MIB, hard_limit_bytes=hard)


@settings(max_examples=100, deadline=None)
@given(t=st.floats(allow_nan=True, allow_infinity=True))
def test_timeout_rule(t):
    """100 generated floats (NaN, infinities, huge, tiny, negative): accepted exactly in (0, a week]."""
    if t == t and 0 < t <= MAX_TIMEOUT_S:
        assert timeout_seconds(t) == t
    else:
        with pytest.raises(BenchInputError, match="--timeout"):
            timeout_seconds(t)


@pytest.mark.parametrize(
    "option", [("--memory-limit-mb", str(10**15)), ("--memory-limit-mb", str(2**70)), ("--timeout", "inf")]
)
def test_bad_option_is_exit_2_before_anything(tmp_path, capsys, option):
    """Control: before this check, --memory-limit-mb 10**15 reached setrlimit in each worker and every case
    was an `error`; --timeout inf overflowed select() inside the first case."""
    from bench.cli.main import main

    out = tmp_path / "out"
    rc = main(["run", *option, "--out", str(out), str(REPO / "scenarios")])
    assert rc == 2 and not out.exists()
    assert option[0] in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# A second signal right after the first is only noted

_TWO_SIGNALS = textwrap.dedent("""
    import os, signal, sys, time
    from bench.runner.interrupts import Interrupted, interrupts_deferred, interrupts_raise

    def cases():
        with interrupts_raise():
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(5)

    def cleanup():  # a second signal while the worker is killed and the results are written
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        print("results written", flush=True)

    if sys.argv[1] == "nested":  # run_cases' layout
        with interrupts_deferred() as noted:
            try:
                cases()
            except Interrupted:
                pass
            cleanup()
        print("noted", noted, flush=True)
    else:  # the layout before: raising, then (after a gap) deferring
        try:
            cases()
        except Interrupted:
            pass
        cleanup()
""")


def test_second_signal_after_the_first_is_noted_not_fatal():
    """SIGHUP raises; a SIGTERM during the cleanup that follows is noted and the write completes.
    Control: the old layout (deferring only from the final write on) dies by that SIGTERM before it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    new = subprocess.run(
        [sys.executable, "-c", _TWO_SIGNALS, "nested"], env=env, capture_output=True, text=True
    )
    assert new.returncode == 0, new.stderr
    assert new.stdout.splitlines() == ["results written", f"noted [{int(signal.SIGTERM)}]"]
    old = subprocess.run([sys.executable, "-c", _TWO_SIGNALS, "old"], env=env, capture_output=True, text=True)
    assert old.returncode == -signal.SIGTERM and "results written" not in old.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("first", "second_after_ms"),
    [("SIGHUP", None), ("SIGHUP", 0), ("SIGHUP", 150), ("SIGTERM", 0), ("SIGTERM", 50), ("SIGTERM", 300)],
)
def test_hangup_or_term_then_a_second_sigterm_keep_results(tmp_path, cache_root, first, second_after_ms):
    """The terminal hangs up (SIGHUP to the run's whole process group) or SIGTERM comes while the first and
    only case runs; then, in 5 of the 6 runs, a SIGTERM 0-300 ms later. results.json is strict JSON,
    `interrupted`, the case `not_run` "interrupted while this case ran".
    Control: with the run.py before SIGHUP was handled, the three SIGHUP runs die by SIGHUP with no
    results.json (seen). The SIGTERM-twice runs passed there too (the gap before the final write is short);
    the gap itself is shown by test_second_signal_after_the_first_is_noted_not_fatal."""
    from bench.results.store import load
    from tests.scenario.test_hostile_inputs import _strict_loads

    scenario = tmp_path / "hup.toml"
    scenario.write_text(_scenario("hup"))
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PEFT_BENCH_CACHE": str(cache_root),
        "PYTHONPATH": str(REPO),
        inject.ENV_VAR: "hup:hang@start",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--out", str(out), str(scenario)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's job is
    )
    try:
        _wait_for_hang(out / "cases" / "hup_fp32-none.log", proc)
        os.killpg(proc.pid, getattr(signal, first))
        if second_after_ms is not None:
            time.sleep(second_after_ms / 1000)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    _strict_loads((out / "results.json").read_text())
    results = load(out)
    assert results.interrupted and [c.verdict for c in results.cases] == ["not_run"], output
    assert results.cases[0].reason == "interrupted while this case ran (its worker was killed)"
    # 130 when the run returned; killed by SIGTERM only if the second one came after the final write
    assert proc.returncode in (130, -signal.SIGTERM), (proc.returncode, output)
    if second_after_ms is None:
        assert proc.returncode == 130, output


# ---------------------------------------------------------------------------------------------------------
# Nothing written outside --out: symlinks refused; rm -rf OUT mid-run; a finished run's folder


def _cases(tmp_path, name="links"):
    from bench.scenario import load_scenario as load
    from bench.spec.cases import expand

    path = tmp_path / f"{name}.toml"
    path.write_text(_scenario(name))
    return expand(load(path))


PER_CASE = [
    "links_fp32-none.log",
    "links_fp32-none.case.json",
    "links_fp32-none.json",
    "links_fp32-none.inductor-cache",
]


@pytest.mark.parametrize("name", PER_CASE)
def test_symlink_at_a_case_file_is_refused_and_its_target_untouched(tmp_path, cache_root, name):
    """4 per-case paths (log, case file, result file, the cold compile cache folder). The case is an `error`
    naming the link; no worker starts; the target keeps its bytes.
    Control: with the old open(log, "wb") the log's target was truncated; the old code gave none of the four
    an error (seen failing: rmtree(ignore_errors=True) silently left the linked cache folder in place)."""
    from bench.results.store import load
    from bench.runner.launch import RunOptions
    from bench.runner.run import run_cases

    target = tmp_path / "precious"
    if name.endswith("inductor-cache"):
        target.mkdir()
        (target / "keep.txt").write_text("precious\n")
        target = target / "keep.txt"
    else:
        target.write_text("precious\n")
    out = tmp_path / "out"
    (out / "cases").mkdir(parents=True)
    (out / "cases" / name).symlink_to(target.parent if name.endswith("inductor-cache") else target)
    opts = RunOptions(out_dir=out, cache_root=cache_root, compile_cache="cold")
    results = run_cases(_cases(tmp_path), opts)
    assert target.read_text() == "precious\n"
    if name.endswith("inductor-cache"):
        assert sorted(target.parent.iterdir()) == [target]  # nothing removed from or written into it
    (case,) = results.cases
    assert case.verdict == "error" and "symbolic link" in case.reason and name in case.reason, case.reason
    assert load(out).cases[0].reason == case.reason


@pytest.mark.parametrize(
    "name", [".peft-bench.runner.lock", "results.json", "summary.md", "results.csv", "cases"]
)
def test_symlink_at_a_run_file_or_the_cases_folder_is_refused(tmp_path, cache_root, name):
    """5 run-level paths: the lock (O_NOFOLLOW), the three results files and the cases folder."""
    from bench.runner.launch import RunOptions
    from bench.runner.run import run_cases

    target = tmp_path / "elsewhere"
    if name == "cases":
        target.mkdir()
    else:
        target.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(target)
    cases = _cases(tmp_path) if name == "cases" else []
    if name == "cases":
        results = run_cases(cases, RunOptions(out_dir=out, cache_root=cache_root))
        assert "symbolic link" in results.cases[0].reason and list(target.iterdir()) == []
    else:
        with pytest.raises(BenchInputError, match="symbolic link"):
            run_cases(cases, RunOptions(out_dir=out, cache_root=cache_root))
        assert target.read_text() == "precious\n"


@pytest.mark.slow
def test_rm_rf_out_mid_run_stops_the_first_run_and_refuses_a_second(tmp_path, cache_root, monkeypatch):
    """The first run's case hangs; the folder is deleted; a second lock on the same path is refused; then
    SIGTERM: the first run notices its lock file is gone and writes nothing (OutputFolderLost).
    Control: with the flock alone the second lock was granted (seen failing with _path_lock disabled)."""
    import shutil
    import threading

    from bench.runner.launch import RunOptions
    from bench.runner.lock import OutputFolderLost, folder_lock
    from bench.runner.run import run_cases

    monkeypatch.setenv(inject.ENV_VAR, "links:hang@start")
    out = tmp_path / "out"
    log = out / "cases" / "links_fp32-none.log"
    seen: dict[str, object] = {}

    def attack():
        deadline = time.monotonic() + 120
        while not (log.exists() and inject.MARKER in log.read_text()):
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        shutil.rmtree(out)
        try:
            with folder_lock(out):
                seen["second"] = "granted"
        except BenchInputError as exc:
            seen["second"] = str(exc)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=attack)
    thread.start()
    try:
        with pytest.raises(OutputFolderLost, match="removed"):
            run_cases(_cases(tmp_path), RunOptions(out_dir=out, cache_root=cache_root))
    finally:
        thread.join()
    assert "another peft-bench run" in str(seen.get("second")), seen
    assert not (out / "results.json").exists()


@pytest.mark.slow
def test_a_worker_of_a_removed_run_never_writes_into_the_new_folder(tmp_path, cache_root, monkeypatch):
    """The first run's worker pauses at its start; OUT is removed and made again (as a second run would);
    the worker then finishes: its result must not appear in the new folder, and the first run stops.
    Control: with write_json(out_file, ...) (the path, not the folder handle) the old worker's result landed
    in the new cases/ folder (seen failing before write_json_in)."""
    import shutil
    import threading

    from bench.runner.launch import RunOptions
    from bench.runner.lock import OutputFolderLost
    from bench.runner.run import run_cases

    monkeypatch.setenv(inject.ENV_VAR, "links:slow@start")
    out = tmp_path / "out"
    log = out / "cases" / "links_fp32-none.log"
    remade: list[bool] = []

    def remove_and_remake():
        deadline = time.monotonic() + 120
        while not (log.exists() and inject.MARKER in log.read_text()):
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        shutil.rmtree(out)
        (out / "cases").mkdir(parents=True)
        remade.append(True)

    thread = threading.Thread(target=remove_and_remake)
    thread.start()
    try:
        with pytest.raises(OutputFolderLost):
            run_cases(_cases(tmp_path), RunOptions(out_dir=out, cache_root=cache_root))
    finally:
        thread.join()
    assert remade, "the worker never reached its fault marker"
    assert sorted(p.name for p in (out / "cases").iterdir()) == [], "the old run's worker wrote here"
    assert not (out / "results.json").exists()


def test_run_into_a_finished_runs_folder_needs_overwrite(tmp_path, cache_root, capsys, monkeypatch):
    """Refused without --overwrite (results.json byte-for-byte kept); runs with it.
    Control: before this check the second run replaced results.json silently."""
    from bench.cli.main import main

    monkeypatch.setenv("PEFT_BENCH_CACHE", str(cache_root))
    scenario = tmp_path / "finished.toml"
    scenario.write_text(_scenario("finished"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"finished": true}\n')
    assert main(["run", "-q", "--out", str(out), str(scenario)]) == 2
    err = capsys.readouterr().err
    assert "--resume it" in err and "--overwrite" in err
    assert (out / "results.json").read_text() == '{"finished": true}\n'
    assert main(["run", "-q", "--overwrite", "--out", str(out), str(scenario)]) == 0
    assert json.loads((out / "results.json").read_text())["cases"][0]["verdict"] == "pass"


def test_run_overwrite_leaves_no_case_file_of_the_old_run(tmp_path, cache_root, capsys, monkeypatch):
    """--overwrite replaces the old run whole: its results, summary and case files (issue 32).
    Control: before, the old run's cases/ files stayed beside the new ones."""
    from bench.cli.main import main

    monkeypatch.setenv("PEFT_BENCH_CACHE", str(cache_root))
    scenario = tmp_path / "new.toml"
    scenario.write_text(_scenario("new"))
    out = tmp_path / "out"
    (out / "cases").mkdir(parents=True)
    (out / "results.json").write_text('{"finished": true}\n')
    (out / "summary.md").write_text("old summary\n")
    stale = out / "cases" / "old_fp32-none.log"
    stale.write_text("the old run's log\n")
    keep = out / "notes.txt"  # not the run's: left alone
    keep.write_text("mine\n")
    assert main(["run", "-q", "--overwrite", "--out", str(out), str(scenario)]) == 0, capsys.readouterr()
    assert not stale.exists()
    assert sorted(p.name for p in (out / "cases").iterdir() if p.name.startswith("old")) == []
    assert "old summary" not in (out / "summary.md").read_text()
    assert keep.read_text() == "mine\n"
