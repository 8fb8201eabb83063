"""The parent side of a run: one fresh worker process per case, a timeout each, results kept as they come.

The parent blocks in wait() while a case runs (its CPU time is recorded, to show it stays idle); one case's
worker is bench.runner.launch.run_one. A case whose worker crashes, is killed, runs out of memory or times out gets
the verdict `error` with what happened and where (bench.results.exits), and the run goes on. results.json is
rewritten atomically as cases finish (after each one while a write is cheap: bench.runner.saving), so a run
interrupted (SIGINT, SIGTERM, SIGHUP) keeps every finished case and marks the rest `not_run`, and one killed
outright keeps its last write, with the cases since in cases/; `--resume` then runs only the missing ones.
One run at a time writes to a folder (bench.runner.lock).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import resource
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bench import RESULTS_SCHEMA_VERSION, VERDICT_RULES_VERSION, __version__
from bench.errors import BenchInputError, OutputFull, is_disk_full
from bench.judge.relative import relative_outcomes
from bench.report.answers_view import summary_lines
from bench.results.environment import collect
from bench.results.records import CaseResult, Environment, Results, WorkerInfo
from bench.results.store import remove_run_outputs, save
from bench.results.summary import write_summary
from bench.runner.interrupts import Interrupted, interrupts_deferred, interrupts_raise
from bench.runner.jobs import LiveWorkers, core_groups, threads_per_job, usable_cpus
from bench.runner.launch import (
    RunOptions,
    child_env,
    error_result,
    not_run,
    run_one,
    shared_zygotes_for,
)
from bench.runner.lock import folder_lock
from bench.runner.processes import REAP_WAIT_S, WorkerGone, fork_available
from bench.runner.saving import SaveClock
from bench.spec.cases import Case
from bench.spec.codec import from_dict

__all__ = ["default_out_dir", "run_cases", "run_one"]


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


def run_cases(
    cases: list[Case],
    opts: RunOptions,
    *,
    previous: dict[str, CaseResult] | None = None,
    progress: Callable[[str, int, int, Case, CaseResult | None, float], None] | None = None,
    phase_progress: Callable[[int, int, Case, str, float, float, bool], None] | None = None,
    replace_previous: bool = False,
) -> Results:
    """Run every case; `previous` holds finished results to keep (for --resume). `replace_previous`
    (--overwrite) removes the results and case files of the run in the folder first, once the lock is held.

    `phase_progress(i, n, case, phase, phase_s, run_elapsed_s, changed)` is called from a watcher thread
    while a case runs (bench.runner.progress), at most every POLL_S. Long because: the lock, the deferred
    interrupts and the final write wrap the case loop in one with-block, so that every path ends in a saved
    results file."""
    previous = previous or {}
    with folder_lock(opts.out_dir) as lock:
        if replace_previous:  # under the lock: never the files of a run still going
            remove_run_outputs(opts.out_dir)
        slots = job_slots(opts)
        # The preloaded workers start before the first case, so no case's wall time holds them; the
        # environment block is read in a process forked from the first (the parent never imports torch).
        zygotes = prestart_zygotes(slots)
        env = (environment_via(zygotes[0], opts.out_dir) if zygotes else None) or collect()
        if (
            opts.jobs > 1
        ):  # each case runs on its job's cores, with that many torch threads (bench.runner.jobs)
            env = replace(env, torch_threads=threads_per_job([s.cpus for s in slots]))
        created = opts.created_at or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        scenario_set = opts.scenario_set or tuple(sorted({c.scenario.name for c in cases}))
        done: dict[str, CaseResult] = {cid: r for cid, r in previous.items() if r.verdict != "not_run"}
        self_before = resource.getrusage(resource.RUSAGE_SELF)
        run_started = time.perf_counter()
        in_flight: list[str] = []  # the cases whose workers run now

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
                verdict_rules=VERDICT_RULES_VERSION,
                suite_version=__version__,
                created_at=created,
                environment=env,
                scenario_set=scenario_set,
                # Expectations between cases (a strategy faster than another) need all of them: decided here.
                cases=relative_outcomes(tuple(done.get(c.id) or missing(c) for c in cases), opts.jobs),
                command=opts.command,
                shard=opts.shard,
                scheduler=dict(opts.scheduler),
                parent_cpu_s=parent_cpu,
                interrupted=interrupted,
                jobs=opts.jobs,
                selection_cases=opts.selection[0] if opts.selection else None,
                selection_sha256=opts.selection[1] if opts.selection else "",
                options=opts.settings,
            )

        todo = [c for c in cases if c.id not in done]
        total = len(todo)
        saves = SaveClock()

        def begin(i: int, case: Case):
            """The parent's side before a case starts; returns its on_phase callback."""
            if progress:
                progress("start", i, total, case, None, time.perf_counter() - run_started)
            in_flight.append(case.id)
            lock.check()  # rm -rf OUT, or a replaced lock file: stop before writing there
            if not phase_progress:
                return None

            def on_phase(phase, phase_s, changed, i=i, case=case):
                phase_progress(i, total, case, phase, phase_s, time.perf_counter() - run_started, changed)

            return on_phase

        def finish(i: int, case: Case, result: CaseResult) -> None:
            done[case.id] = result
            in_flight.remove(case.id)
            lock.check()
            # Marked interrupted until the final write: the file a run leaves when it dies (killed, a full
            # disk) says that it did not finish; "pending" says which cases were still to come.
            saves.maybe(lambda: write_run(opts.out_dir, replace(snapshot(False), interrupted=True)))
            if progress:
                progress("done", i, total, case, result, time.perf_counter() - run_started)

        interrupted, full = False, None
        # Deferred outside, raising inside: from the first signal to the end of the final write there is
        # no moment where a second one gets the default action.
        with interrupts_deferred():
            try:
                with interrupts_raise():
                    if len(slots) > 1:
                        run_parallel(todo, slots, begin, finish)
                    else:
                        for i, case in enumerate(todo, 1):
                            on_phase = begin(i, case)
                            finish(i, case, guarded_run(case, slots[0], on_phase))
            except (KeyboardInterrupt, Interrupted):
                interrupted = True
            except OutputFull as exc:  # no case more: each would only add figures that cannot be kept
                interrupted, full = True, exc
            results = snapshot(interrupted)
            lock.check()
            try:
                write_run(opts.out_dir, results, summary=True)
            except OutputFull as exc:  # the last complete write stays: valid, marked interrupted
                full = full or exc
    if full is not None:
        raise full
    return results


def write_run(out_dir: Path, results: Results, *, summary: bool = False) -> None:
    """save (and write_summary): a full disk, quota or file-size limit becomes OutputFull, saying what is kept
    and how to finish; any other error is raised as it is."""
    try:
        save(out_dir, results)
        if summary:
            write_summary(out_dir, results, summary_lines(results))
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise OutputFull(
            f"{out_dir}: cannot write the results ({exc.strerror}); the run stopped. The finished cases are "
            f"kept: in results.json as of its last complete write, the rest in cases/. Free some space, then "
            f"run: peft-bench run --resume {out_dir}"
        ) from None


def guarded_run(case: Case, opts: RunOptions, on_phase=None, live=None) -> CaseResult:
    """run_one, where a parent that cannot start or watch a worker still gives the case a result."""
    try:
        result = run_one(case, opts, on_phase=on_phase, live=live)
    except Exception as exc:  # the parent could not start or watch this worker: the others still run.
        # No process to describe: an empty worker block (no 0 s).
        result = error_result(case, f"could not run the worker: {type(exc).__name__}: {exc}", WorkerInfo())
    return replace(result, case=case.to_dict())  # every result keeps the case it ran


def job_slots(opts: RunOptions) -> list[RunOptions]:
    """The options each job runs its cases with: `opts` itself for one job, else each pinned to its cores."""
    if opts.jobs <= 1:
        return [opts]
    if opts.zygote is not None:  # one zygote serves one case at a time: it cannot be every job's
        raise ValueError("RunOptions.zygote is for one job; --jobs starts one zygote per job")
    return [replace(opts, cpus=group) for group in core_groups(opts.jobs, usable_cpus())]


def prestart_zygotes(slots: list[RunOptions]) -> list:
    """Each job's preloaded worker (pinned to its cores), all importing at once, started from this thread:
    PR_SET_PDEATHSIG follows the thread that started it, and a job thread ends before the run does. None for
    spawned workers or a zygote the caller brought; a zygote that fails to start is the case's to report."""
    if slots[0].worker != "fork" or not fork_available() or slots[0].zygote is not None:
        return []
    try:
        return shared_zygotes_for([s.cpus for s in slots])
    except (WorkerGone, OSError):
        return []


def environment_via(zygote, out_dir: Path):
    """bench.results.environment.collect() in a process forked from the preloaded worker, which has imported torch
    already (the parent would spend a second importing it again); the zygote itself stays off the device,
    the fork may touch it. None if that process fails: the caller collects here instead."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        out, log = Path(tmp) / "environment.json", Path(tmp) / "environment.log"
        try:
            handle = zygote.fork(
                [str(out)], log=log, env=child_env(None), memory_limit_bytes=None, entry=ENVIRONMENT_ENTRY
            )
        except (WorkerGone, OSError):
            return None
        exit_ = handle.wait(ENVIRONMENT_TIMEOUT_S)
        if exit_ is None:
            handle.kill_group()
            handle.wait(REAP_WAIT_S) or handle.abandon()  # a stopped zygote must not hold the run (issue 32)
            return None
        if exit_.returncode != 0 or not out.exists():
            return None
        try:
            return from_dict(Environment, json.loads(out.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):  # a half-written or odd file: collected here instead
            return None


ENVIRONMENT_ENTRY = "bench.results.environment:probe_main"
ENVIRONMENT_TIMEOUT_S = 120.0


def run_parallel(todo: list[Case], slots: list[RunOptions], begin, finish) -> None:
    """--jobs N: each case in a job thread, at most one per job, each job pinned to its own cores (bench.runner.jobs).

    Only this (the signals') thread touches the results: `begin` and `finish` run here, in order of
    completion. On Ctrl-C or SIGTERM every live worker is killed and the job threads return at once; what
    they return then is dropped, and the cases they ran are `interrupted while this case ran`."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    slots = list(slots)
    live = LiveWorkers()
    pending = list(enumerate(todo, 1))
    running: dict = {}
    pool = ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="peft-bench-job")
    try:
        while pending or running:
            while pending and slots:
                i, case = pending.pop(0)
                slot = slots.pop(0)
                on_phase = begin(i, case)
                running[pool.submit(guarded_run, case, slot, on_phase, live)] = (i, case, slot)
            # A timeout, so that a signal's exception is raised here within half a second.
            finished, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                i, case, slot = running.pop(future)
                slots.append(slot)
                finish(i, case, future.result())
    except BaseException:
        # A case whose worker finished since the last poll (up to half a second ago) has its result: it is
        # kept, not recorded as "interrupted while this case ran". Only those done before the kill: a killed
        # worker's job returns soon after it, with nothing of the case.
        ended = [
            (f, running[f]) for f in list(running) if f.done() and not f.cancelled() and not f.exception()
        ]
        live.kill_all()
        for future, (i, case, _slot) in ended:
            try:
                finish(i, case, future.result())
            except Exception:  # noqa: BLE001  (the interrupt is what is raised; this case then counts not_run)
                break
        raise
    finally:
        # Killed workers are reaped within moments; never wait here for a job thread (a second signal).
        pool.shutdown(wait=False, cancel_futures=True)
