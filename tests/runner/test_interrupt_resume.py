"""Interruptions: Ctrl-C (SIGINT), SIGTERM and SIGKILL to a real `peft-bench run` process mid-run leave a
valid results.json holding every finished case and marking the rest `not_run`; `--resume DIR` then runs only
what is missing. Every results file is written atomically: a reader never sees a partial one, and a writer
killed at a random moment leaves the previous complete file.

The case that is running when the signal comes is made to hang (bench.worker.inject), so the signal always
lands while a worker runs, at a moment the test knows.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from bench.results.store import RESULTS_FILE, load
from bench.runner.launch import RunOptions
from bench.runner.run import run_cases
from bench.spec.codec import to_dict
from bench.worker import inject
from tests.conftest import FAST_TIMING, LOAD_A, REPO, scenario_toml

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow


def _scenario(name: str) -> str:
    return scenario_toml(name, [LOAD_A], timing=FAST_TIMING)


def _start(args, cache_root, fault: str | None, method: str = "fork") -> subprocess.Popen:
    env = {**os.environ, "PEFT_BENCH_CACHE": str(cache_root), "PYTHONPATH": str(REPO)}
    env.pop(inject.ENV_VAR, None)
    if fault:
        env[inject.ENV_VAR] = fault
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--worker", method, *map(str, args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_hang(
    log: Path, proc: subprocess.Popen, previous: int | None = None, timeout_s: float = 240
) -> int:
    """The pid of the worker once it hangs (its log says so; a log left by `previous` does not count)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"peft-bench exited early ({proc.returncode}): {proc.stdout.read()}")
        if log.exists():
            m = re.search(rf"{re.escape(inject.MARKER)} hang at start \(pid (\d+)\)", log.read_text())
            if m and int(m.group(1)) != previous:
                return int(m.group(1))
        time.sleep(0.05)
    raise AssertionError(f"no hanging worker after {timeout_s} s")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class _Reader(threading.Thread):
    """Reads results.json over and over while runs write it: every read must be a whole JSON document."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.stop, self.reads, self.partial = path, threading.Event(), 0, []

    def run(self):
        while not self.stop.wait(0.005):  # often enough to meet writes, without eating a core
            try:
                text = self.path.read_text()
            except FileNotFoundError:
                continue
            try:
                json.loads(text)
                self.reads += 1
            except json.JSONDecodeError as exc:
                self.partial.append(f"{exc}: {len(text)} chars")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_sigint_sigterm_sigkill_then_resume(tmp_path, cache_root, method):
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    first.write_text(_scenario("first"))
    second.write_text(_scenario("second"))
    out = tmp_path / "out"
    log = out / "cases" / "second_fp32-none.log"
    hang = "second:hang@start"
    reader = _Reader(out / RESULTS_FILE)
    reader.start()
    try:
        # 1. Ctrl-C while the second case runs: the first is kept, the second is not run, exit code 130.
        proc = _start([first, second, "--out", out], cache_root, hang, method)
        worker = _wait_for_hang(log, proc)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 130, output
        assert "INTERRUPTED" in output
        results = load(out)
        assert results.interrupted
        verdicts = {c.scenario: c.verdict for c in results.cases}
        assert verdicts == {"first": "pass", "second": "not_run"}
        assert results.cases[1].reason == "interrupted while this case ran (its worker was killed)"
        assert _gone(worker)  # the parent killed the hung worker's process group
        kept = to_dict(results.cases[0])

        # 2. --resume, and SIGTERM while the missing case runs: the first case is untouched.
        proc = _start(["--resume", out], cache_root, hang, method)
        worker = _wait_for_hang(log, proc, previous=worker)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 130, output
        assert "1 kept from" in output
        results = load(out)
        assert [c.verdict for c in results.cases] == ["pass", "not_run"]
        assert to_dict(results.cases[0]) == kept

        # 3. SIGKILL of the parent itself: nothing can run on its side, yet results.json stays whole, and the
        # kernel kills the worker with it (PR_SET_PDEATHSIG) instead of leaving it hanging.
        before = (out / RESULTS_FILE).read_bytes()
        proc = _start(["--resume", out], cache_root, hang, method)
        worker = _wait_for_hang(log, proc, previous=worker)
        proc.kill()
        proc.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while not _gone(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(worker)
        assert (out / RESULTS_FILE).read_bytes() == before

        # 4. --resume with nothing in the way: only the missing case runs, and the run is complete.
        proc = _start(["--resume", out], cache_root, None, method)
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output
        assert "[1/1] running second[fp32-none]" in output and "running first" not in output
        results = load(out)
        assert not results.interrupted
        assert [c.verdict for c in results.cases] == ["pass", "pass"]
        assert to_dict(results.cases[0]) == kept  # the same result, from the first run's worker
    finally:
        reader.stop.set()
        reader.join()
    assert reader.reads > 0 and reader.partial == []


def test_in_process_interrupt_marks_running_and_pending_cases(tmp_path, cache_root, monkeypatch):
    """SIGTERM to the process calling run_cases: the running case and the ones after it get their reasons."""
    from bench.scenario import load_scenarios
    from bench.spec.cases import expand_all

    paths = []
    for name in ("hangs", "later-1", "later-2"):
        path = tmp_path / f"{name}.toml"
        path.write_text(_scenario(name))
        paths.append(path)
    monkeypatch.setenv(inject.ENV_VAR, "hangs:hang@start")
    out = tmp_path / "out"
    log = out / "cases" / "hangs_fp32-none.log"

    def interrupt_when_hanging():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if log.exists() and inject.MARKER in log.read_text():
                os.kill(os.getpid(), signal.SIGTERM)  # run_cases turns it into an interruption
                return
            time.sleep(0.05)

    thread = threading.Thread(target=interrupt_when_hanging)
    thread.start()
    try:
        results = run_cases(expand_all(load_scenarios(paths)), RunOptions(out_dir=out, cache_root=cache_root))
    finally:
        thread.join()
    assert results.interrupted
    assert [(c.verdict, c.reason) for c in results.cases] == [
        ("not_run", "interrupted while this case ran (its worker was killed)"),
        ("not_run", "interrupted before this case ran"),
        ("not_run", "interrupted before this case ran"),
    ]
    assert to_dict(load(out)) == to_dict(results)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is restored


def test_cli_progress_lines_show_how_long_a_step_ran(tmp_path, cache_root, cli):
    """Issue 32: in a log (not a terminal) every progress line said "0s". Steps 1 and 2 here sleep 2.5 s
    each first (bench.worker.inject `slow`): the line of step 2 says how long step 1 took."""
    path = tmp_path / "slow.toml"
    path.write_text(_scenario("slow") + '[[steps]]\nop = "forward"\n')
    env = {"PEFT_BENCH_CACHE": str(cache_root), inject.ENV_VAR: "slow:slow@1,slow:slow@2"}
    proc = cli("run", path, "--out", tmp_path / "out", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    took = [int(s) for s in re.findall(r"step 1 \(load_adapter\) took (\d+)s", proc.stdout)]
    assert took and took[0] >= 2, proc.stdout


def test_cli_interrupted_run_says_how_to_resume(tmp_path, cache_root, cli):
    """Issue 32: exit 130 said INTERRUPTED and nothing more; it now prints the command that finishes it."""
    path = tmp_path / "hangs.toml"
    path.write_text(_scenario("hangs"))
    out = tmp_path / "out"
    log = out / "cases" / "hangs_fp32-none.log"

    def interrupt_when_hanging():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if log.exists() and inject.MARKER in log.read_text():
                os.kill(os.getpid(), signal.SIGTERM)  # run_cases turns it into an interruption
                return
            time.sleep(0.05)

    thread = threading.Thread(target=interrupt_when_hanging)
    thread.start()
    try:
        env = {"PEFT_BENCH_CACHE": str(cache_root), inject.ENV_VAR: "hangs:hang@start"}
        proc = cli("run", path, "--out", out, env=env)
    finally:
        thread.join()
    assert proc.returncode == 130, proc.stdout + proc.stderr
    assert f"peft-bench run --resume {out}" in proc.stdout + proc.stderr


def test_second_run_into_the_same_folder_is_refused(tmp_path, cache_root):
    from bench.errors import BenchInputError
    from bench.runner.lock import folder_lock

    out = tmp_path / "out"
    with folder_lock(out):
        with pytest.raises(BenchInputError, match=rf"another peft-bench run \(pid {os.getpid()}\)"):
            run_cases([], RunOptions(out_dir=out, cache_root=cache_root))
    with folder_lock(out):  # released when its holder is done (or dies: flock goes with the descriptor)
        pass


def test_default_out_dirs_are_distinct(tmp_path):
    from bench.runner.run import default_out_dir

    folders = [default_out_dir(tmp_path) for _ in range(5)]  # same process, same second
    assert len(set(folders)) == 5 and all(f.is_dir() for f in folders)


# ---------------------------------------------------------------------------------------------------------
# Atomic writes, killed at random moments.

WRITER = """
import sys
from pathlib import Path
from bench.results.store import load, save

mode, source, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
results = load(source)
print("ready", flush=True)
first = True
while True:
    if mode == "atomic":
        save(out, results)
    else:  # the negative control: write in place, as a naive writer would
        data = source.read_text()
        with open(out / "results.json", "w") as f:
            for k in range(0, len(data), 4096):
                f.write(data[k : k + 4096])
                f.flush()
    if first:  # the parent starts its random kill only once one whole file is there to be damaged
        print("saved", flush=True)
        first = False
"""


def _big_results(tmp_path: Path) -> Path:
    """A results file of a few MB (many cases), so that writing it takes a while."""
    from bench.results.environment import collect
    from bench.results.records import CaseResult, Results, WorkerInfo
    from bench.results.store import save

    cases = tuple(
        CaseResult(
            case_id=f"s[{i}]",
            scenario="s",
            scenario_file="s.toml",
            params={"precision": "fp32", "compile": "none", "hotswap_path": "transformers"},
            verdict="pass",
            reason="",
            worker=WorkerInfo(log_tail=("x" * 200,) * 10),
        )
        for i in range(800)
    )
    results = Results(1, "0", "now", collect(), ("s",), cases)
    folder = tmp_path / "source"
    save(folder, results)
    return folder / RESULTS_FILE


def _kill_at_random(mode: str, source: Path, out: Path, rounds: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    broken = []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(rounds):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, mode, str(source), str(out)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip() == "ready"
        # Under load the first save can take longer than any fixed delay: wait for it, then kill at random
        # inside the writes that follow (each one replaces a complete file).
        assert proc.stdout.readline().strip() == "saved"
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.wait()
        path = out / RESULTS_FILE
        if path.exists():
            try:
                json.loads(path.read_text())
            except json.JSONDecodeError:
                broken.append(f"{path.stat().st_size} bytes")
    return broken


def test_killed_writer_never_leaves_a_partial_results_file(tmp_path):
    source = _big_results(tmp_path)
    assert _kill_at_random("atomic", source, tmp_path / "atomic", rounds=6, seed=1) == []
    load(tmp_path / "atomic")  # and it is a results file, not just JSON


def test_negative_control_in_place_writer_is_caught(tmp_path):
    """The check above can fail: a writer that writes in place, killed mid-write, leaves a truncated file."""
    source = _big_results(tmp_path)
    broken = _kill_at_random("plain", source, tmp_path / "plain", rounds=6, seed=2)
    assert broken, "no truncated file seen: the kill check would not notice a non-atomic writer"


# ---------------------------------------------------------------------------------------------------------
# Bad command-line input around runs and results: exit 2, one clear line, no traceback.


def _results_with(tmp_path: Path, scenario_file: Path, case_id: str) -> Path:
    from bench.results.environment import collect
    from bench.results.records import CaseResult, Results
    from bench.results.store import save

    params = {"precision": "fp32", "compile": "none", "hotswap_path": "transformers"}
    case = CaseResult(case_id, "first", str(scenario_file), params, "not_run", "pending")
    folder = tmp_path / "run"
    from bench import __version__

    save(folder, Results(1, __version__, "now", collect(), ("first",), (case,)))
    return folder


def _bad_resume(tmp_path: Path, kind: str) -> tuple[list[str], str]:
    scenario = tmp_path / "first.toml"
    scenario.write_text(_scenario("first"))
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    if kind == "no results file":
        return ["run", "--resume", str(run)], "no such results file"
    if kind == "not JSON":
        (run / RESULTS_FILE).write_text("{ truncated")
        return ["run", "--resume", str(run)], "not a results file (invalid JSON"
    if kind == "not results":
        (run / RESULTS_FILE).write_text('{"hello": "world"}')
        return ["run", "--resume", str(run)], "not a peft-bench results file"
    if kind == "newer schema":
        (run / RESULTS_FILE).write_text('{"schema_version": 999, "cases": []}')
        return ["run", "--resume", str(run)], "schema_version: 999 is newer than this peft-bench"
    if kind == "scenario changed":
        folder = _results_with(tmp_path, scenario, "first[fp32-inductor]")
        return ["run", "--resume", str(folder)], "are no longer in its scenario files (first[fp32-inductor])"
    if kind == "scenario gone":
        folder = _results_with(tmp_path, tmp_path / "deleted.toml", "first[fp32-none]")
        return ["run", "--resume", str(folder)], "deleted.toml: no such file or directory"
    if kind == "resume with paths":
        folder = _results_with(tmp_path, scenario, "first[fp32-none]")
        refusal = "drop the paths, --shard, --tag, --skip-tag and -k"
        return ["run", str(scenario), "--resume", str(folder)], refusal
    if kind == "resume with another out":
        folder = _results_with(tmp_path, scenario, "first[fp32-none]")
        return ["run", "--resume", str(folder), "--out", str(tmp_path / "x")], "drop --out"
    if kind == "zero timeout":
        return ["run", str(scenario), "--timeout", "0"], "--timeout: must be greater than 0"
    if kind == "negative memory limit":
        return ["run", str(scenario), "--memory-limit-mb", "-5"], "--memory-limit-mb: must be greater than 0"
    if kind == "memory limit not a number":
        return ["run", str(scenario), "--memory-limit-mb", "lots"], "expected a number, got 'lots'"
    if kind == "unknown option":
        # an abbreviation of --trust-remote-code must not turn it on
        return ["run", str(scenario), "--trust-remote"], "unrecognized arguments: --trust-remote"
    raise AssertionError(kind)


BAD_CLI = [
    "no results file",
    "not JSON",
    "not results",
    "newer schema",
    "scenario changed",
    "scenario gone",
    "resume with paths",
    "resume with another out",
    "zero timeout",
    "negative memory limit",
    "memory limit not a number",
    "unknown option",
]


@pytest.mark.parametrize("kind", BAD_CLI)
def test_bad_command_line_input(tmp_path, capsys, kind):
    from bench.cli.main import main

    argv, fragment = _bad_resume(tmp_path, kind)
    if "--resume" not in argv:
        argv += [
            "--out",
            str(tmp_path / "never"),
        ]  # if it ran after all, it would write here, not in reports/
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert "Traceback" not in err and "peft-bench: error:" in err
    assert not (tmp_path / "never").exists()  # nothing ran
