"""The parent side of a run: one fresh worker process per case, a timeout each, results kept as they come.

The parent blocks in wait() while a case runs (its CPU time is recorded, to show it stays idle). A case whose
worker crashes, is killed, runs out of memory or times out gets the verdict `error` with what happened and
where (bench.exits), and the run goes on. results.json is rewritten atomically after every case, so a run
interrupted (SIGINT, SIGTERM, SIGHUP) or even killed keeps every finished case and marks the rest `not_run`;
`--resume` then runs only those. One run at a time writes to a folder (bench.lock).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import json
import os
import resource
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench import RESULTS_SCHEMA_VERSION, __version__
from bench.atomic import write_json
from bench.cases import Case
from bench.environment import collect
from bench.errors import BenchInputError
from bench.exits import STACK_DUMP_HEADER, describe_exit, read_log
from bench.interrupts import Interrupted, interrupts_deferred, interrupts_raise
from bench.judge.relative import relative_outcomes
from bench.lock import folder_lock
from bench.outfiles import create_output, ensure_folder, refuse_symlink
from bench.progress import CaseWatcher
from bench.records import CaseResult, Results
from bench.results import case_from_file, save
from bench.summary import write_summary
from bench.workers import (
    WORKER_METHODS,
    SpawnedWorker,
    WorkerGone,
    Zygote,
    default_method,
    fork_available,
    shared_zygotes,
)

LOG_TAIL_LINES = 15
# After SIGUSR1 (faulthandler dumps the stack into the log) a timed-out worker is killed as soon as the dump is
# in its log, or after this long (a loaded machine may take a moment to schedule it).
STACK_DUMP_WAIT_S = 3.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class RunOptions:
    out_dir: Path
    cache_root: Path
    timeout_s: float | None = None  # overrides each scenario's timeout_s
    memory_limit_bytes: int | None = None  # address-space limit for each worker (RLIMIT_AS)
    command: tuple[str, ...] = ()
    shard: str | None = None
    # A shard records the whole selection's scenario names, so that merge can tell shards of one selection.
    scenario_set: tuple[str, ...] | None = None
    # Opt-ins that let a source run code when loaded (a model's own Python files; pickle weight files).
    trust_remote_code: bool = False
    allow_pickle: bool = False
    # "warm": one inductor cache shared by every case and run (under cache_root); "cold": a fresh, empty one
    # per case, so compile_s is the full cold compile. Recorded in each case's worker block.
    compile_cache: str = "warm"
    # "fork": each case is forked from a preloaded worker (bench.zygote), no import cost; "spawn": a fresh
    # `python -m bench.worker`. Recorded in each case's worker block as start_method.
    worker: str = field(default_factory=default_method)
    device: str | None = None  # "cpu" or "cuda" (--device); None: the worker picks (cuda when available)
    zygote: Zygote | None = field(default=None, compare=False, repr=False)


COMPILE_CACHES = ("warm", "cold")


def default_out_dir(reports: Path = Path("reports")) -> Path:
    """A new folder per run, created here: two runs started at once never share one (the pid and, within one
    process, a counter tell them apart; mkdir without exist_ok settles any remaining race)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    Path(reports).mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        folder = Path(reports) / (f"run-{stamp}-{os.getpid()}" + (f"-{n}" if n > 1 else ""))
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise BenchInputError("cannot create a new run folder", source=str(reports))


def _child_env(compile_cache_dir: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if compile_cache_dir is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(compile_cache_dir)
        env["TRITON_CACHE_DIR"] = str(compile_cache_dir / "triton")
    # Quiet the libraries' progress bars in the worker logs; behaviour is unchanged.
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _child_setup(memory_limit_bytes: int | None) -> Callable[[], None]:
    """Runs in the child between fork and exec: the memory limit, and death with the parent."""
    try:
        libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    except OSError:
        libc = None
    parent = os.getpid()

    def setup() -> None:
        if memory_limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
        if libc is not None:
            # A parent killed with SIGKILL cannot kill its workers; the kernel does it for us instead of
            # leaving a hung worker running forever.
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

    return setup


def case_spec(case: Case, opts: RunOptions) -> dict:
    """What the worker is told (bench.worker.__main__): the case, where the cache is, the opt-ins."""
    return {
        "case_id": case.id,
        "scenario": case.scenario.name,
        "scenario_file": case.scenario.source_file,
        "params": case.params,
        "case": case.to_dict(),
        "cache_root": str(opts.cache_root),
        "trust_remote_code": opts.trust_remote_code,
        "allow_pickle": opts.allow_pickle,
        "device": opts.device,
    }


def run_one(case: Case, opts: RunOptions, on_phase=None) -> CaseResult:
    ensure_folder(opts.out_dir)  # run_cases made it already; a benchmark calling run_one alone may not have
    cases_dir = ensure_folder(opts.out_dir / "cases")  # a real folder, not a link out of OUT
    stem = case.file_stem
    case_file, result_file, log_file = (
        cases_dir / f"{stem}.case.json",
        cases_dir / f"{stem}.json",
        cases_dir / f"{stem}.log",
    )
    write_json(case_file, case_spec(case, opts))
    refuse_symlink(result_file)
    if result_file.exists():
        result_file.unlink()
    timeout = opts.timeout_s or case.scenario.timeout_s
    if opts.compile_cache == "cold":
        compile_dir = cases_dir / f"{stem}.inductor-cache"
        # rmtree(ignore_errors) would leave a link in place, and inductor would write through it.
        refuse_symlink(compile_dir)
        shutil.rmtree(compile_dir, ignore_errors=True)
    else:
        compile_dir = opts.cache_root / "inductor"
    method = opts.worker if opts.worker in WORKER_METHODS else default_method()
    if method == "fork" and not fork_available():
        method = "spawn"
    argv = [str(case_file), str(result_file)]
    env = _child_env(compile_dir)
    zygote, fallback = None, None
    if method == "fork":
        try:  # started once and reused (its start is not this case's wall time)
            zygote = opts.zygote or shared_zygotes.get(_child_env(None), _child_setup(None))
        except (WorkerGone, OSError) as exc:  # the case still runs, in a spawned worker, and says why
            method, fallback = "spawn", f"{type(exc).__name__}: {exc}"
    started = time.perf_counter()
    with create_output(log_file) as log:  # O_NOFOLLOW: a planted link is refused, not written through
        if zygote is not None:
            handle = zygote.fork(argv, log=log_file, env=env, memory_limit_bytes=opts.memory_limit_bytes)
        else:
            handle = SpawnedWorker(
                [sys.executable, "-m", "bench.worker", *argv], log, env, _child_setup(opts.memory_limit_bytes)
            )
        timed_out = False
        watcher = CaseWatcher(log_file, case, on_phase) if on_phase else None
        try:
            if watcher:
                watcher.start()
            exit_ = handle.wait(timeout)
            if exit_ is None:
                timed_out = True
                _dump_stack(handle, log_file)
                handle.kill_group()
                exit_ = handle.wait(None)
        except BaseException:  # Ctrl-C, SIGTERM (also while the stack is dumped): no worker outlives it
            handle.kill_group()
            with contextlib.suppress(BaseException):  # a second signal here must not keep the first one
                handle.settle()
            raise
        finally:
            if watcher:
                watcher.stop()
    wall_s = time.perf_counter() - started
    returncode = exit_.returncode
    worker = {
        "pid": handle.pid,
        "returncode": returncode,
        "timeout_s": timeout,
        "wall_s": wall_s,
        "cpu_s": exit_.cpu_s,
        "log": str(log_file),
        "compile_cache": opts.compile_cache,
        "start_method": method,
    }
    if fallback:
        worker["fork_failed"] = fallback
    if opts.compile_cache == "cold":
        shutil.rmtree(compile_dir, ignore_errors=True)  # only this case could use it
    if opts.memory_limit_bytes is not None:
        worker["memory_limit_bytes"] = opts.memory_limit_bytes
    log_text = read_log(log_file)
    tail = log_text.splitlines()[-LOG_TAIL_LINES:]
    if timed_out or returncode != 0 or not result_file.exists():
        what = describe_exit(returncode, timed_out=timed_out, timeout_s=timeout, log_text=log_text)
        return _error(case, what, worker, tail, wall_s)
    try:
        result = case_from_file(result_file)
    except (OSError, ValueError, TypeError) as exc:
        return _error(case, f"unreadable worker result: {exc}", worker, tail, wall_s)
    if result.verdict == "error":
        worker["log_tail"] = tail
    return replace(result, worker={**result.worker, **worker})


def _dump_stack(proc, log_file: Path) -> None:
    """Ask a hung worker for its Python stack (faulthandler writes it into the log) before it is killed."""
    before = read_log(log_file).count(STACK_DUMP_HEADER)
    try:
        os.kill(proc.pid, signal.SIGUSR1)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + STACK_DUMP_WAIT_S
    while time.monotonic() < deadline and not proc.poll():
        if read_log(log_file).count(STACK_DUMP_HEADER) > before:
            time.sleep(0.05)  # the rest of the frames follow the header within microseconds
            return
        time.sleep(0.02)


def _error(case: Case, reason: str, worker: dict, tail: list[str], wall_s: float) -> CaseResult:
    return CaseResult(
        case_id=case.id,
        scenario=case.scenario.name,
        scenario_file=case.scenario.source_file,
        params=case.params,
        verdict="error",
        reason=reason,
        worker={**worker, "wall_s": wall_s, "log_tail": tail},
        # CaseResult.wall_s is only ever the worker's own measure of the case; a dead worker reported none.
        wall_s=None,
        case=case.to_dict(),
    )


def not_run(case: Case, reason: str) -> CaseResult:
    return CaseResult(
        case_id=case.id,
        scenario=case.scenario.name,
        scenario_file=case.scenario.source_file,
        params=case.params,
        verdict="not_run",
        reason=reason,
        case=case.to_dict(),
    )


def run_cases(
    cases: list[Case],
    opts: RunOptions,
    *,
    previous: dict[str, CaseResult] | None = None,
    progress: Callable[[str, int, int, Case, CaseResult | None, float], None] | None = None,
    phase_progress: Callable[[int, int, Case, str, float, float, bool], None] | None = None,
) -> Results:
    """`phase_progress(i, n, case, phase, phase_s, run_elapsed_s, changed)` is called from a watcher thread
    while a case runs (bench.progress), at most every POLL_S."""
    """Run every case; `previous` holds finished results to keep (for --resume)."""
    previous = previous or {}
    with folder_lock(opts.out_dir) as lock:
        env = collect()
        created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        scenario_set = opts.scenario_set or tuple(sorted({c.scenario.name for c in cases}))
        done: dict[str, CaseResult] = {cid: r for cid, r in previous.items() if r.verdict != "not_run"}
        self_before = resource.getrusage(resource.RUSAGE_SELF)
        run_started = time.perf_counter()
        in_flight: list[str] = []  # the case whose worker runs now

        def snapshot(interrupted: bool) -> Results:
            now = resource.getrusage(resource.RUSAGE_SELF)
            parent_cpu = (now.ru_utime - self_before.ru_utime) + (now.ru_stime - self_before.ru_stime)

            def missing(c: Case) -> CaseResult:
                if not interrupted:
                    return not_run(c, "pending")
                if c.id in in_flight:
                    return not_run(c, "interrupted while this case ran (its worker was killed)")
                return not_run(c, "interrupted before this case ran")

            return Results(
                schema_version=RESULTS_SCHEMA_VERSION,
                suite_version=__version__,
                created_at=created,
                environment=env,
                scenario_set=scenario_set,
                # Expectations between cases (a strategy faster than another) need all of them: decided here.
                cases=relative_outcomes(tuple(done.get(c.id) or missing(c) for c in cases)),
                command=opts.command,
                shard=opts.shard,
                parent_cpu_s=parent_cpu,
                interrupted=interrupted,
            )

        interrupted = False
        # Deferred outside, raising inside: from the first signal to the end of the final write there is
        # no moment where a second one gets the default action.
        with interrupts_deferred():
            try:
                with interrupts_raise():
                    if opts.worker == "fork" and fork_available() and opts.zygote is None:
                        # Start the preloaded worker before the first case, so no case's wall time holds it.
                        with contextlib.suppress(WorkerGone, OSError):
                            shared_zygotes.get(_child_env(None), _child_setup(None))
                    todo = [c for c in cases if c.id not in done]
                    total = len(todo)
                    for i, case in enumerate(todo, 1):
                        if progress:
                            progress("start", i, len(todo), case, None, time.perf_counter() - run_started)
                        in_flight[:] = [case.id]
                        lock.check()  # rm -rf OUT, or a replaced lock file: stop before writing there
                        on_phase = None
                        if phase_progress:

                            def on_phase(phase, phase_s, changed, i=i, case=case, n=total):
                                phase_progress(
                                    i, n, case, phase, phase_s, time.perf_counter() - run_started, changed
                                )

                        try:
                            result = run_one(case, opts, on_phase=on_phase)
                        except (
                            Exception
                        ) as exc:  # the parent could not start or watch this worker: the others still run
                            result = _error(
                                case, f"could not run the worker: {type(exc).__name__}: {exc}", {}, [], 0.0
                            )
                        result = replace(result, case=case.to_dict())  # every result keeps the case it ran
                        done[case.id] = result
                        in_flight.clear()
                        lock.check()
                        save(opts.out_dir, snapshot(False))
                        if progress:
                            progress("done", i, len(todo), case, result, time.perf_counter() - run_started)
            except (KeyboardInterrupt, Interrupted):
                interrupted = True
            results = snapshot(interrupted)
            lock.check()
            save(opts.out_dir, results)
            write_summary(opts.out_dir, results)
    return results


def load_previous(out_dir: Path) -> dict[str, CaseResult]:
    from bench.results import load

    return {c.case_id: c for c in load(out_dir).cases}


@dataclass(frozen=True)
class Resume:
    """What `--resume DIR` runs: the cases of the run in DIR, in its order, with the results it has."""

    cases: tuple[Case, ...]
    previous: dict[str, CaseResult]
    shard: str | None
    scenario_set: tuple[str, ...]
    # case id -> which versions differ, for kept cases measured by another version (--resume-any-version)
    version_notes: dict[str, str] = field(default_factory=dict)

    @property
    def missing(self) -> tuple[Case, ...]:
        return tuple(c for c in self.cases if self.previous[c.id].verdict == "not_run")


def version_differences(results: Results) -> list[str]:
    """How the run in a results file differs from this one in suite and library versions (empty: not at all)."""
    from bench.merge import VERDICT_LIBRARIES

    diffs = []
    if results.suite_version != __version__:
        diffs.append(f"peft-bench {results.suite_version} there, {__version__} here")
    here = collect().libraries
    for lib in VERDICT_LIBRARIES:
        then, now = results.environment.libraries.get(lib), here.get(lib)
        if then != now:
            diffs.append(f"{lib} {then or 'not installed'} there, {now or 'not installed'} here")
    return diffs


def resume_selection(out_dir: Path, *, any_version: bool = False) -> Resume:
    """The selection of the run in out_dir: the cases its results hold (older files: reloaded from the scenario
    files they name).

    A results file that is not one, or is from a newer schema, is a BenchInputError (bench.results.load); so is
    a scenario file that changed so that a case of the run no longer exists.
    """
    from bench.cases import expand_all
    from bench.results import load
    from bench.scenario import load_scenarios

    results = load(out_dir)
    if not results.cases:
        raise BenchInputError("the results file holds no case to resume", source=str(out_dir))
    # Figures measured by another suite or library version are not one run with what runs now.
    diffs = version_differences(results)
    if diffs and not any_version:
        raise BenchInputError(
            f"the run was made by other versions ({'; '.join(diffs)}): start a new run, or keep its cases "
            "anyway with --resume-any-version",
            source=str(out_dir),
        )
    kept_note = "; ".join(diffs)
    if all(c.case for c in results.cases):  # self-contained results: the cases are in the file
        return Resume(
            cases=tuple(Case.from_dict(c.case) for c in results.cases),
            previous={c.case_id: c for c in results.cases},
            shard=results.shard,
            scenario_set=results.scenario_set,
            version_notes={c.case_id: kept_note for c in results.cases if diffs and c.verdict != "not_run"},
        )
    # Results written before cases were kept in them: reload the scenario files they name.
    files = list(dict.fromkeys(c.scenario_file for c in results.cases))
    by_id = {c.id: c for c in expand_all(load_scenarios(files))}
    gone = [c.case_id for c in results.cases if c.case_id not in by_id]
    if gone:
        raise BenchInputError(
            f"{len(gone)} case(s) of this run are no longer in its scenario files ({', '.join(gone[:3])}): "
            "the files changed since the run; start a new run",
            source=str(out_dir),
        )
    return Resume(
        cases=tuple(by_id[c.case_id] for c in results.cases),
        previous={c.case_id: c for c in results.cases},
        shard=results.shard,
        scenario_set=results.scenario_set,
        version_notes={c.case_id: kept_note for c in results.cases if diffs and c.verdict != "not_run"},
    )


def dump_case_list(cases: list[Case]) -> str:
    return json.dumps([c.id for c in cases], indent=1)
