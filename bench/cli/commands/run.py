"""`peft-bench run`: checks before any case starts, the run with its progress lines, and the exit code."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import time
from pathlib import Path

from bench.cli.ci import check_ci_outputs, scheduler_from_env, write_ci_outputs
from bench.cli.estimating import after_run, before_run
from bench.cli.options import (
    hard_address_space_limit,
    machine_memory_bytes,
    memory_limit_bytes,
    timeout_seconds,
)
from bench.cli.paths import cache_root, check_out_folder, default_cache_root
from bench.cli.preflight import check_before_run, parse_required, skipped_required
from bench.cli.selection import DEFAULT_SCENARIOS, select_cases, shard_text
from bench.errors import BenchInputError
from bench.results.records import RunSettings
from bench.results.store import holds_results
from bench.results.summary import SUMMARY_FILE, case_line, counts_line, counts_text
from bench.results.verdict import exit_code
from bench.runner.jobs import parse_jobs, usable_cpus
from bench.runner.launch import RunOptions
from bench.runner.lock import LOCK_FILE
from bench.runner.processes import default_method
from bench.runner.progress import eta_s, phase_line
from bench.runner.resume import finished_run, given_options, resume_selection, resumed_options
from bench.runner.run import default_out_dir, run_cases
from bench.spec.cases import Shard, selection_fingerprint
from bench.spec.library_pairs import installed_versions, refusal


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Long because: the run command's checks in the order they must refuse bad input before any case starts,
    then the run and its exit code."""
    # A library pair known not to work together: one line with the fix, not every case failing on it.
    if not args.allow_known_broken_versions and (why := refusal(*installed_versions())):
        raise BenchInputError(why)
    # Options first: a bad one is exit 2 before any folder is made or scenario read; every case would
    # otherwise fail on it (a memory limit setrlimit refuses is an error in each worker).
    memory_limit = None
    if args.memory_limit_mb is not None:
        memory_limit = memory_limit_bytes(
            args.memory_limit_mb,
            machine_bytes=machine_memory_bytes(),
            hard_limit_bytes=hard_address_space_limit(),
        )
    timeout = timeout_seconds(args.timeout) if args.timeout is not None else None
    jobs = parse_jobs(args.jobs, usable_cpus())
    # Paths next: a run that cannot write its results must not find out after its first case.
    cache = cache_root(args.cache) if args.cache else default_cache_root()
    if args.out or args.resume:
        check_out_folder(args.resume or args.out, lock_file=LOCK_FILE)
    check_ci_outputs(args.junit_xml, os.environ)
    if args.resume_any_version and not args.resume:
        raise BenchInputError("--resume-any-version goes with --resume")

    if args.resume:
        # The selection is the resumed run's own (its results name the scenario files and cases).
        if args.paths or args.shard or args.tag or args.skip_tag or args.keyword:
            raise BenchInputError(
                "--resume runs the selection of the run it resumes; drop the paths, --shard, --tag, --skip-tag "
                "and -k"
            )
        if args.out and args.out != args.resume:
            raise BenchInputError("--resume writes into the folder it resumes; drop --out")
        if not (args.junit_xml or args.require_precision) and (done := finished_run(args.resume)):
            # Nothing to run: say so from the verdicts alone (a JUnit file or a precision check reads the
            # whole results, below).
            print(
                f"peft-bench: every case of {args.resume} has finished ({len(done.verdicts)}): nothing to resume"
            )
            print(f"peft-bench: {counts_text(done.counts, done.unverified_passes)}")
            if (args.resume / SUMMARY_FILE).is_file():
                write_ci_outputs(None, args.resume, None, os.environ)  # the step summary, as a run gives it
            return exit_code(done.verdicts)
        resume = resume_selection(args.resume, any_version=args.resume_any_version)
        cases, previous = list(resume.cases), resume.previous
        shard, scenario_set = resume.shard, resume.scenario_set
        out_dir = args.resume
        # Every case of a run is judged and timed under its options: the resume takes them from the run.
        settings, jobs, taken = resumed_options(
            resume.options, resume.jobs, _settings(args, timeout, memory_limit), jobs, given_options(argv)
        )
        selection_fp, created_at = resume.selection, resume.created_at or None
    else:
        selection = select_cases(
            args.paths or [DEFAULT_SCENARIOS], None, args.max_cases, args.tag, args.keyword, args.skip_tag
        )
        shard = shard_text(args.shard) if args.shard else None
        cases = Shard.parse(shard).select(selection) if shard else selection
        if not cases:
            raise BenchInputError(f"--shard {shard}: no case selected (the selection has fewer cases than N)")
        previous = {}
        scenario_set = tuple(sorted({c.scenario.name for c in selection}))
        settings, taken = _settings(args, timeout, memory_limit), []
        selection_fp, created_at = selection_fingerprint(selection), None
        if args.out and not args.overwrite:
            _refuse_finished_run(args.out)
        out_dir = args.out
    required = parse_required(args.require_precision)
    check_before_run(required, (c.precision for c in cases), settings.device or "cpu")
    # The cases this invocation runs (not those --resume keeps): estimated, and refused over --max-minutes
    # before any folder is made or worker started.
    to_run = [c for c in cases if not (c.id in previous and previous[c.id].verdict != "not_run")]
    est = before_run(args, to_run, cache, jobs)
    out_dir = out_dir or default_out_dir()
    opts = RunOptions(
        out_dir=out_dir,
        cache_root=cache,
        command=("peft-bench", *argv),
        shard=shard,
        scenario_set=scenario_set,
        scheduler=scheduler_from_env(os.environ),
        **dataclasses.asdict(settings),  # RunSettings' fields are RunOptions' own names
        jobs=jobs,
        selection=selection_fp,
        created_at=created_at,
    )

    tty = sys.stdout.isatty() and jobs == 1  # lines rewritten in place only when one case runs at a time
    case_started = [0.0]
    last_step: dict[int, tuple[str, float]] = {}  # case number -> the step seen last, and its time so far

    def progress(event, i, n, case, result, elapsed_s):
        if args.quiet:
            return
        if event == "start":
            case_started[0] = elapsed_s
            print(f"[{i}/{n}] running {case.id}  (elapsed {elapsed_s:.0f}s)", flush=True)
        else:
            print(("\r\033[K" if tty else "") + f"[{i}/{n}] {case_line(result)}", flush=True)

    def phase_progress(i, n, case, phase, phase_s, elapsed_s, changed):
        # A terminal gets one line rewritten in place; CI logs (not a TTY) get a plain line per new step,
        # which says how long the step before it took (the new one has run 0 s).
        previous = last_step.get(i)
        last_step[i] = (phase, phase_s)
        if args.quiet or not (tty or changed):
            return
        eta = eta_s(i - 1, n, case_started[0], elapsed_s - case_started[0])
        ended = previous if (changed and not tty and previous and previous[0] != phase) else None
        line = phase_line(i, n, phase, phase_s, elapsed_s, eta, previous=ended)
        print(f"\r\033[K{line}" if tty else line, end="" if tty else "\n", flush=True)

    kept = sum(1 for c in cases if c.id in previous and previous[c.id].verdict != "not_run")
    if taken:
        print(f"peft-bench: resuming with the run's own {', '.join(taken)}", flush=True)
    if args.resume:
        for case_id, note in resume.version_notes.items():
            print(f"peft-bench: {case_id}: kept figures from another version ({note})", flush=True)
    if not args.quiet:
        print(
            f"peft-bench: {len(cases)} case(s)"
            + (f", {kept} kept from {args.resume}" if kept else "")
            + (f", {jobs} at a time" if jobs > 1 else "")
            + f" -> {out_dir}",
            flush=True,
        )
    started = time.perf_counter()
    results = run_cases(
        cases,
        opts,
        previous=previous,
        progress=progress,
        phase_progress=phase_progress,
        replace_previous=bool(args.overwrite and not args.resume),
    )
    ran = [c.id for c in to_run]
    after_run(args, est, results, cache=cache, ran=ran, wall_s=time.perf_counter() - started, out_dir=out_dir)
    print(f"peft-bench: {counts_line(results)}" + ("; INTERRUPTED" if results.interrupted else ""))
    print(f"peft-bench: results in {out_dir}/results.json, summary in {out_dir}/summary.md")
    write_ci_outputs(args.junit_xml, out_dir, results, os.environ)
    if results.interrupted:
        print(f"peft-bench: to run the missing cases: peft-bench run --resume {shlex.quote(str(out_dir))}")
        return 130
    if skipped := skipped_required(required, results.cases):
        print(f"peft-bench: --require-precision: required cases were skipped: {'; '.join(skipped)}")
        return 1
    return exit_code(c.verdict for c in results.cases)


def _settings(args: argparse.Namespace, timeout: float | None, memory_limit: int | None) -> RunSettings:
    """The options this command line asks for (RunOptions' defaults where it gives none)."""
    return RunSettings(
        require_oracles=args.require_oracles,
        timeout_s=timeout,
        memory_limit_bytes=memory_limit,
        device=args.device,
        compile_cache=args.compile_cache,
        worker=args.worker or default_method(),
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
    )


def _refuse_finished_run(out: Path) -> None:
    if holds_results(out):
        raise BenchInputError(
            "this folder holds the results of another run: --resume it to finish its missing cases, "
            "--overwrite to replace its results, or give another --out",
            source=str(out),
        )
