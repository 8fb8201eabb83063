"""One case in its own worker process: what the worker is told, how it is started (forked from the preloaded
worker or spawned), watched against its timeout, asked for its stack when it hangs, and what the parent
records about it (bench.results.records.WorkerInfo). bench.runner.run runs the cases through run_one, one after another or,
under --jobs, one per job thread (its `live` registry lets the run's thread kill them all).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import resource
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.results.atomic import write_json
from bench.results.exits import STACK_DUMP_HEADER, describe_exit, read_log
from bench.results.outfiles import create_output, ensure_folder, refuse_symlink
from bench.results.records import CaseResult, RunSettings, WorkerInfo
from bench.results.store import CASES_DIR, case_from_file
from bench.runner.processes import (
    REAP_WAIT_S,
    WORKER_METHODS,
    SpawnedWorker,
    WorkerGone,
    Zygote,
    default_method,
    fork_available,
    shared_zygotes,
)
from bench.runner.progress import CaseWatcher
from bench.spec.cases import Case

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
    # The scheduler job this run is (bench.cli.ci.scheduler_from_env): Results.scheduler.
    scheduler: dict[str, str] = field(default_factory=dict)
    # Opt-ins that let a source run code when loaded (a model's own Python files; pickle weight files).
    trust_remote_code: bool = False
    allow_pickle: bool = False
    # A step whose output an oracle could not verify fails (oracles_agree) instead of an unverified pass.
    require_oracles: bool = False
    # "warm": one inductor cache shared by every case and run (under cache_root); "cold": a fresh, empty one
    # per case, so compile_s is the full cold compile. Recorded in each case's worker block.
    compile_cache: str = "warm"
    # "fork": each case is forked from a preloaded worker (bench.runner.zygote), no import cost; "spawn": a fresh
    # `python -m bench.worker`. Recorded in each case's worker block as start_method.
    worker: str = field(default_factory=default_method)
    device: str | None = None  # "cpu" or "cuda" (--device); None: the worker picks (cuda when available)
    zygote: Zygote | None = field(default=None, compare=False, repr=False)
    jobs: int = 1  # cases at a time (bench.runner.run.run_parallel); 1: one after another, unpinned
    # The cores this case's worker is pinned to (one job of `--jobs N`, bench.runner.jobs); None: not pinned.
    cpus: tuple[int, ...] | None = None
    # The whole selection this run is part of (bench.spec.cases.selection_fingerprint): Results.selection_*.
    selection: tuple[int, str] | None = None
    created_at: str | None = None  # when the run started: a --resume keeps its run's; None: now

    @property
    def settings(self) -> RunSettings:
        """The options the verdicts and figures depend on, as the results record them (Results.options)."""
        return RunSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RunSettings)})


COMPILE_CACHES = ("warm", "cold")


def child_env(compile_cache_dir: Path | None = None, cpus: tuple[int, ...] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if cpus is not None:  # a pinned job: torch's threads are its cores, unless the user set them
        env.setdefault("OMP_NUM_THREADS", str(len(cpus)))
    if compile_cache_dir is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(compile_cache_dir)
        env["TRITON_CACHE_DIR"] = str(compile_cache_dir / "triton")
    # Quiet the libraries' progress bars in the worker logs; behaviour is unchanged.
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    root = str(Path(__file__).resolve().parents[2])  # the folder holding the bench package
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def child_setup(memory_limit_bytes: int | None, cpus: tuple[int, ...] | None = None) -> Callable[[], None]:
    """Runs in the child between fork and exec: the memory limit, the cores it may use, and death with the
    parent."""
    try:
        libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    except OSError:
        libc = None
    parent = os.getpid()

    def setup() -> None:
        if memory_limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        if libc is not None:
            # A parent killed with SIGKILL cannot kill its workers; the kernel does it for us instead of
            # leaving a hung worker running forever.
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

    return setup


def shared_zygote(cpus: tuple[int, ...] | None = None) -> Zygote:
    """The preloaded worker every forked case of this process comes from (one per job's cores under --jobs,
    pinned to them: its children inherit the affinity), started on first use."""
    return shared_zygotes_for([cpus])[0]


def shared_zygotes_for(core_sets: list[tuple[int, ...] | None]) -> list[Zygote]:
    """shared_zygote for each set of cores, the missing ones importing side by side."""
    return shared_zygotes.get_many([(child_env(None, c), child_setup(None, c), c) for c in core_sets])


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
        "require_oracles": opts.require_oracles,
        "device": opts.device,
    }


def run_one(case: Case, opts: RunOptions, on_phase=None, live=None) -> CaseResult:
    """Run one case in its own worker process and read back its result; a worker that crashed, was killed or
    timed out gives an `error` result saying what happened (bench.results.exits). `on_phase(phase, phase_s, changed)`
    is called from a watcher thread while the case runs (bench.runner.progress). `live` (bench.runner.jobs.LiveWorkers)
    is told of the worker while it runs, for a run whose cases run in other threads than the signals'. Long
    because: start, watch, time-out and read-back share one try/finally that kills the worker on every
    path."""
    ensure_folder(opts.out_dir)  # run_cases made it already; a benchmark calling run_one alone may not have
    cases_dir = ensure_folder(opts.out_dir / CASES_DIR)  # a real folder, not a link out of OUT
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
    env = child_env(compile_dir, opts.cpus)
    zygote, fallback = None, None
    if method == "fork":
        try:  # started once and reused (its start is not this case's wall time)
            zygote = opts.zygote or shared_zygote(opts.cpus)
        except (WorkerGone, OSError) as exc:  # the case still runs, in a spawned worker, and says why
            method, fallback = "spawn", f"{type(exc).__name__}: {exc}"
    started = time.perf_counter()
    with create_output(log_file) as log:  # O_NOFOLLOW: a planted link is refused, not written through
        if zygote is not None:
            if zygote.import_output:  # where a spawned worker's imports print it: the case's log (issue 32)
                log.write(zygote.import_output.encode("utf-8", "replace"))
                log.flush()
            handle = zygote.fork(argv, log=log_file, env=env, memory_limit_bytes=opts.memory_limit_bytes)
        else:
            handle = SpawnedWorker(
                [sys.executable, "-m", "bench.worker", *argv],
                log,
                env,
                child_setup(opts.memory_limit_bytes, opts.cpus),
            )
        timed_out = False
        watcher = CaseWatcher(log_file, case, on_phase) if on_phase else None
        if live is not None:
            live.started(handle)
        try:
            if watcher:
                watcher.start()
            exit_ = handle.wait(timeout)
            if exit_ is None:
                timed_out = True
                _dump_stack(handle, log_file)
                handle.kill_group()
                # Bounded: a stopped preloaded worker never reports the exit (issue 32); it is killed then.
                exit_ = handle.wait(REAP_WAIT_S) or handle.abandon()
        except BaseException:  # Ctrl-C, SIGTERM (also while the stack is dumped): no worker outlives it
            handle.kill_group()
            with contextlib.suppress(BaseException):  # a second signal here must not keep the first one
                handle.settle()
            raise
        finally:
            if watcher:
                watcher.stop()
            if live is not None:
                live.ended(handle)
    wall_s = time.perf_counter() - started
    returncode = exit_.returncode
    if opts.compile_cache == "cold":
        shutil.rmtree(compile_dir, ignore_errors=True)  # only this case could use it
    log_text = read_log(log_file)
    worker = WorkerInfo(
        pid=handle.pid,
        returncode=returncode,
        timeout_s=timeout,
        wall_s=wall_s,
        cpu_s=exit_.cpu_s,
        log=str(log_file),
        compile_cache=opts.compile_cache,
        start_method=method,
        fork_failed=fallback,
        memory_limit_bytes=opts.memory_limit_bytes,
        log_tail=tuple(log_text.splitlines()[-LOG_TAIL_LINES:]),
        # The scheduler job this case ran in: a case kept by a --resume in another job keeps its own.
        job=opts.scheduler.get("job_id"),
    )
    if timed_out or returncode != 0 or not result_file.exists():
        what = describe_exit(returncode, timed_out=timed_out, timeout_s=timeout, log_text=log_text)
        return error_result(case, what, worker)
    try:
        result = case_from_file(result_file)
    except (OSError, ValueError, TypeError) as exc:
        return error_result(case, f"unreadable worker result: {exc}", worker)
    if result.verdict != "error":
        worker = replace(worker, log_tail=())  # the log's tail is kept for errors only
    # The parent's facts over the worker's own (its traceback tail, when it finished).
    return replace(result, worker=result.worker.merged(worker))


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


def error_result(case: Case, reason: str, worker: WorkerInfo) -> CaseResult:
    """An `error` result the parent writes for a case its worker did not report on."""
    return CaseResult(
        case_id=case.id,
        scenario=case.scenario.name,
        scenario_file=case.scenario.source_file,
        params=case.params,
        verdict="error",
        reason=reason,
        worker=worker,
        # CaseResult.wall_s is only ever the worker's own measure of the case; a dead worker reported none
        # (the parent's time of its process is worker.wall_s).
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
