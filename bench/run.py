"""The parent side of a run: one fresh worker process per case, a timeout each, results kept as they come.

The parent never polls: it blocks in wait() while a case runs (its CPU time is recorded, to show it stays
idle). A case whose worker crashes, is killed or times out gets the verdict `error` with what happened, and
the run goes on. results.json is rewritten atomically after every case, so an interrupted run keeps every
finished case and marks the rest `not_run`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bench import RESULTS_SCHEMA_VERSION, __version__
from bench.atomic import write_json
from bench.cases import Case
from bench.environment import collect
from bench.records import CaseResult, Results
from bench.results import case_from_file, save
from bench.summary import write_summary

LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class RunOptions:
    out_dir: Path
    cache_root: Path
    timeout_s: float | None = None  # overrides each scenario's timeout_s
    memory_limit_bytes: int | None = None  # address-space limit for each worker (RLIMIT_AS)
    command: tuple[str, ...] = ()
    shard: str | None = None


class Interrupted(Exception):
    pass


def default_out_dir(reports: Path = Path("reports")) -> Path:
    """A new folder per run: two runs started at once never share one (the pid tells them apart)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return reports / f"run-{stamp}-{os.getpid()}"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Quiet the libraries' progress bars in the worker logs; behaviour is unchanged.
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _limit(memory_limit_bytes: int | None) -> Callable[[], None] | None:
    if memory_limit_bytes is None:
        return None

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))

    return apply


def run_one(case: Case, opts: RunOptions) -> CaseResult:
    cases_dir = opts.out_dir / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    stem = case.file_stem
    case_file, result_file, log_file = (
        cases_dir / f"{stem}.case.json",
        cases_dir / f"{stem}.json",
        cases_dir / f"{stem}.log",
    )
    spec = {
        "case_id": case.id,
        "scenario": case.scenario.name,
        "scenario_file": case.scenario.source_file,
        "params": case.params,
        "cache_root": str(opts.cache_root),
    }
    write_json(case_file, spec)
    if result_file.exists():
        result_file.unlink()
    timeout = opts.timeout_s or case.scenario.timeout_s
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", str(case_file), str(result_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_child_env(),
            start_new_session=True,
            preexec_fn=_limit(opts.memory_limit_bytes),
        )
        timed_out = False
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            returncode = proc.wait()
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
    wall_s = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker = {
        "pid": proc.pid,
        "returncode": returncode,
        "timeout_s": timeout,
        "wall_s": wall_s,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "log": str(log_file),
    }
    tail = _tail(log_file)
    if timed_out:
        return _error(case, f"timed out after {timeout:g} s (worker killed)", worker, tail, wall_s)
    if returncode != 0 or not result_file.exists():
        if returncode < 0:
            sig = signal.Signals(-returncode).name
            what = f"worker killed by {sig}"
            if sig == "SIGKILL":
                what += " (out of memory, or killed from outside)"
            elif sig in ("SIGABRT", "SIGSEGV", "SIGBUS", "SIGILL"):
                what += " (native crash)"
        else:
            what = f"worker exited with code {returncode} without a result"
        oom = next((line for line in tail if "MemoryError" in line or "out of memory" in line.lower()), None)
        if oom:
            what += f": {oom.strip()[:200]}"
        return _error(case, what, worker, tail, wall_s)
    try:
        result = case_from_file(result_file)
    except (OSError, ValueError, TypeError) as exc:
        return _error(case, f"unreadable worker result: {exc}", worker, tail, wall_s)
    if result.verdict == "error":
        worker["log_tail"] = tail
    return replace(result, worker={**result.worker, **worker})


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _tail(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return lines[-LOG_TAIL_LINES:]


def _error(case: Case, reason: str, worker: dict, tail: list[str], wall_s: float) -> CaseResult:
    return CaseResult(
        case_id=case.id,
        scenario=case.scenario.name,
        scenario_file=case.scenario.source_file,
        params=case.params,
        verdict="error",
        reason=reason,
        worker={**worker, "log_tail": tail},
        wall_s=wall_s,
    )


def not_run(case: Case, reason: str) -> CaseResult:
    return CaseResult(
        case_id=case.id,
        scenario=case.scenario.name,
        scenario_file=case.scenario.source_file,
        params=case.params,
        verdict="not_run",
        reason=reason,
    )


def run_cases(
    cases: list[Case],
    opts: RunOptions,
    *,
    previous: dict[str, CaseResult] | None = None,
    progress: Callable[[str, int, int, Case, CaseResult | None, float], None] | None = None,
) -> Results:
    """Run every case; `previous` holds finished results to keep (for --resume)."""
    previous = previous or {}
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    env = collect()
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    scenario_set = tuple(sorted({c.scenario.name for c in cases}))
    done: dict[str, CaseResult] = {cid: r for cid, r in previous.items() if r.verdict != "not_run"}
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    run_started = time.perf_counter()

    def snapshot(interrupted: bool) -> Results:
        now = resource.getrusage(resource.RUSAGE_SELF)
        parent_cpu = (now.ru_utime - self_before.ru_utime) + (now.ru_stime - self_before.ru_stime)
        ordered = tuple(
            done.get(c.id) or not_run(c, "interrupted before this case ran" if interrupted else "pending")
            for c in cases
        )
        return Results(
            schema_version=RESULTS_SCHEMA_VERSION,
            suite_version=__version__,
            created_at=created,
            environment=env,
            scenario_set=scenario_set,
            cases=ordered,
            command=opts.command,
            shard=opts.shard,
            parent_cpu_s=parent_cpu,
            interrupted=interrupted,
        )

    def on_term(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    old_term = signal.signal(signal.SIGTERM, on_term)
    interrupted = False
    try:
        todo = [c for c in cases if c.id not in done]
        for i, case in enumerate(todo, 1):
            if progress:
                progress("start", i, len(todo), case, None, time.perf_counter() - run_started)
            result = run_one(case, opts)
            done[case.id] = result
            save(opts.out_dir, snapshot(False))
            if progress:
                progress("done", i, len(todo), case, result, time.perf_counter() - run_started)
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
    finally:
        signal.signal(signal.SIGTERM, old_term)
    results = snapshot(interrupted)
    save(opts.out_dir, results)
    write_summary(opts.out_dir, results)
    return results


def load_previous(out_dir: Path) -> dict[str, CaseResult]:
    from bench.results import load

    return {c.case_id: c for c in load(out_dir).cases}


def dump_case_list(cases: list[Case]) -> str:
    return json.dumps([c.id for c in cases], indent=1)
