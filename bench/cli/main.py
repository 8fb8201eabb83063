"""The command line. Parsing, printing and exit codes live here and nowhere else.

Exit codes: 0 every expectation holds (or is a known failure), 1 a case failed, errored or xpassed,
2 invalid input (scenario, results file, option).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from bench.cli.ci import scheduler_from_env, select_tags, shard_from_env, write_ci_outputs
from bench.cli.options import (
    hard_address_space_limit,
    machine_memory_bytes,
    memory_limit_bytes,
    timeout_seconds,
)
from bench.cli.paths import cache_root, check_out_folder, default_cache_root, path_arg
from bench.cli.preflight import check_before_run, parse_required, skipped_required
from bench.errors import BenchInputError
from bench.results.store import holds_results
from bench.results.summary import case_line, counts_line
from bench.results.verdict import exit_code
from bench.runner.jobs import parse_jobs, usable_cpus
from bench.runner.launch import COMPILE_CACHES, RunOptions
from bench.runner.lock import LOCK_FILE
from bench.runner.progress import eta_s, phase_line
from bench.runner.run import default_out_dir, resume_selection, run_cases
from bench.scenario import load_scenarios
from bench.spec.cases import DEFAULT_MAX_CASES, Shard, check_selection_size, expand_all
from bench.spec.library_pairs import installed_versions, refusal

DEFAULT_SCENARIOS = "scenarios"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # unknown options: our message format, exit 2, no traceback
        self.print_usage(sys.stderr)
        # main() prints "peft-bench: error: "; a subcommand adds its name once ("gate: ...").
        command = self.prog.removeprefix("peft-bench").strip()
        raise BenchInputError(f"{command}: {message}" if command else message)


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """Long because: the CLI's options as one flat argparse table, in the order --help prints them."""
    p = _Parser(
        prog="peft-bench", description="Compile-aware benchmarking and verification of PEFT adapters."
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    # No abbreviations: `--trust-remote` must not silently mean --trust-remote-code.
    run = sub.add_parser("run", help="run scenarios, one isolated process per case", allow_abbrev=False)
    run.add_argument("paths", nargs="*", help=f"scenario files or folders (default: {DEFAULT_SCENARIOS})")
    run.add_argument("--out", type=path_arg, help="output folder (default: a new reports/run-* folder)")
    run.add_argument(
        "--shard",
        help="run only shard K of N (K/N), for CI job matrices; 'auto' takes it from the environment "
        "(PEFT_BENCH_JOB_INDEX/PEFT_BENCH_JOB_TOTAL, or a Slurm job array; docs/ci.md)",
    )
    run.add_argument(
        "--tag",
        action="append",
        default=[],
        help="run only scenarios carrying this tag (repeatable: every tag given must be present)",
    )
    _keyword_option(run)
    run.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        help="where the workers run the cases (default: cuda when available, else cpu)",
    )
    run.add_argument(
        "--junit-xml", type=path_arg, help="also write the results as JUnit XML (one testcase per case)"
    )
    run.add_argument(
        "--timeout",
        type=_positive(float),
        help="per-case timeout in seconds (overrides scenario.timeout_s)",
    )
    run.add_argument(
        "--memory-limit-mb", type=_positive(int), help="address-space limit for each worker process"
    )
    run.add_argument(
        "--resume",
        type=path_arg,
        help="finish an interrupted run in this folder (runs only its missing cases)",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="run into an --out folder that already holds a run's results, replacing them",
    )
    run.add_argument(
        "--allow-known-broken-versions",
        action="store_true",
        help="run even with a transformers/peft pair known not to work together (the compat matrix does)",
    )
    run.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let model folders run their own Python code (off unless this or scenario.trust_remote_code)",
    )
    run.add_argument(
        "--require-oracles",
        action="store_true",
        help="a step whose output the math oracle cannot verify fails (default: a pass that says unverified)",
    )
    run.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load pickle weight files (*.bin), which can run code (off unless this or scenario.allow_pickle)",
    )
    run.add_argument(
        "--cache", type=path_arg, help="cache for built models and adapters (default $PEFT_BENCH_CACHE)"
    )
    run.add_argument(
        "--compile-cache",
        choices=COMPILE_CACHES,
        default="warm",
        help="inductor cache: 'warm' shares one across cases and runs (default), 'cold' gives each case an "
        "empty one, so compile_s is the full cold compile",
    )
    run.add_argument(
        "--jobs",
        default="1",
        metavar="N|auto",
        help="cases at a time, each job pinned to its own cores with that many torch threads (auto: one job "
        "per usable core); default 1. Timings of a jobs run compare with runs of the same --jobs only",
    )
    run.add_argument(
        "--worker",
        choices=("fork", "spawn"),
        default=None,
        help="'fork' starts each case from a preloaded worker process (default where os.fork exists), "
        "'spawn' starts a fresh Python per case",
    )
    run.add_argument(
        "--require-precision",
        metavar="P1,P2",
        help="fail (exit 2 before the run, exit 1 after it) when one of these precisions would be skipped "
        "here, e.g. nf4,int8 without bitsandbytes, or is not in the selection",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="print only the final summary")
    run.add_argument(
        "--resume-any-version",
        action="store_true",
        help="with --resume: keep cases measured by another peft-bench or library version (said per case)",
    )
    _max_cases_option(run)

    ls = sub.add_parser("list", help="print the case ids a selection expands to")
    ls.add_argument("paths", nargs="*", default=[DEFAULT_SCENARIOS])
    ls.add_argument("--shard")
    ls.add_argument("--tag", action="append", default=[], help="only scenarios carrying this tag")
    _keyword_option(ls)
    _max_cases_option(ls)

    # Commands that work on results files live in their own modules: each has register(sub) and run(args).
    for module in _command_modules():
        module.register(sub)
    return p


def _max_cases_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-cases",
        type=_positive(int),
        default=DEFAULT_MAX_CASES,
        help=f"refuse a selection of more cases than this (default {DEFAULT_MAX_CASES})",
    )


# Modules under bench.cli.commands, one per subcommand; add a name here to add a command.
COMMAND_MODULES: tuple[str, ...] = ("report", "compare", "gate", "merge", "compat", "bisect")


def _command_modules():
    import importlib

    return [importlib.import_module(f"bench.cli.commands.{name}") for name in COMMAND_MODULES]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
        return _dispatch(args, argv)
    except BenchInputError as exc:
        print(f"peft-bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before or after the run itself (run_cases handles it while cases run)
        print("peft-bench: interrupted", file=sys.stderr)
        return 130


def _keyword_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-k",
        dest="keyword",
        action="append",
        default=[],
        help="run only cases whose id contains this text (repeatable: any of them), e.g. -k side_by_side",
    )


def _select(
    paths: list[str], shard: str | None, max_cases: int, tags: list[str] = (), keywords: list[str] = ()
):
    scenarios = load_scenarios(paths)
    check_selection_size(scenarios, max_cases)  # from the axes' lengths, before expanding the product
    cases = select_tags(expand_all(scenarios), list(tags))
    if keywords:
        cases = [c for c in cases if any(k in c.id for k in keywords)]
        if not cases:
            raise BenchInputError(f"-k {' '.join(keywords)}: no case id contains any of these")
    if shard:
        text = _shard_text(shard)
        cases = Shard.parse(text).select(cases)
        if not cases:
            raise BenchInputError(f"--shard {text}: no case selected (the selection has fewer cases than N)")
    return cases


def _shard_text(shard: str) -> str:
    return shard_from_env(os.environ) if shard.strip() == "auto" else shard


def _refuse_finished_run(out: Path) -> None:
    if holds_results(out):
        raise BenchInputError(
            "this folder holds the results of another run: --resume it to finish its missing cases, "
            "--overwrite to replace its results, or give another --out",
            source=str(out),
        )


def _dispatch(args: argparse.Namespace, argv: list[str]) -> int:
    if args.command == "list":
        for case in _select(args.paths, args.shard, args.max_cases, args.tag, args.keyword):
            print(case.id)
        return 0
    if args.command == "run":
        return _run(args, argv)
    for module in _command_modules():
        if module.NAME == args.command:
            return module.run(args)
    raise BenchInputError(f"unknown command {args.command!r}")


def _run(args: argparse.Namespace, argv: list[str]) -> int:
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
    if args.resume_any_version and not args.resume:
        raise BenchInputError("--resume-any-version goes with --resume")

    if args.resume:
        # The selection is the resumed run's own (its results name the scenario files and cases).
        if args.paths or args.shard or args.tag or args.keyword:
            raise BenchInputError(
                "--resume runs the selection of the run it resumes; drop the paths, --shard, --tag and -k"
            )
        if args.out and args.out != args.resume:
            raise BenchInputError("--resume writes into the folder it resumes; drop --out")
        resume = resume_selection(args.resume, any_version=args.resume_any_version)
        cases, previous = list(resume.cases), resume.previous
        shard, scenario_set = resume.shard, resume.scenario_set
        out_dir = args.resume
    else:
        selection = _select(args.paths or [DEFAULT_SCENARIOS], None, args.max_cases, args.tag, args.keyword)
        if not selection and args.tag:
            raise BenchInputError(f"--tag {' '.join(args.tag)}: no scenario carries every one of these tags")
        shard = _shard_text(args.shard) if args.shard else None
        cases = Shard.parse(shard).select(selection) if shard else selection
        if not cases:
            raise BenchInputError(f"--shard {shard}: no case selected (the selection has fewer cases than N)")
        previous = {}
        scenario_set = tuple(sorted({c.scenario.name for c in selection}))
        if args.out and not args.overwrite:
            _refuse_finished_run(args.out)
        out_dir = args.out or default_out_dir()
    required = parse_required(args.require_precision)
    check_before_run(required, (c.precision for c in cases), args.device or "cpu")
    opts = RunOptions(
        out_dir=out_dir,
        cache_root=cache,
        timeout_s=timeout,
        memory_limit_bytes=memory_limit,
        command=("peft-bench", *argv),
        shard=shard,
        scenario_set=scenario_set,
        scheduler=scheduler_from_env(os.environ),
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
        require_oracles=args.require_oracles,
        compile_cache=args.compile_cache,
        **({"worker": args.worker} if args.worker else {}),
        device=args.device,
        jobs=jobs,
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
    results = run_cases(
        cases,
        opts,
        previous=previous,
        progress=progress,
        phase_progress=phase_progress,
        replace_previous=bool(args.overwrite and not args.resume),
    )
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


if __name__ == "__main__":
    sys.exit(main())
