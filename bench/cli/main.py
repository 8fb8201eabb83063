"""The command line. Parsing, printing and exit codes live here and nowhere else.

Exit codes: 0 every expectation holds (or is a known failure), 1 a case failed, errored or xpassed,
2 invalid input (scenario, results file, option).
"""

from __future__ import annotations

import argparse
import sys

from bench.cli.commands import run as run_command
from bench.cli.estimating import add_max_minutes, list_estimate
from bench.cli.paths import cache_root, default_cache_root, path_arg
from bench.cli.selection import DEFAULT_SCENARIOS, select_cases
from bench.errors import EXIT_OUTPUT_FULL, BenchInputError, OutputFull, is_disk_full
from bench.runner.jobs import parse_jobs, usable_cpus
from bench.runner.launch import COMPILE_CACHES
from bench.spec.cases import DEFAULT_MAX_CASES


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
    _skip_tag_option(run)
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
    add_max_minutes(run, _positive(float))

    ls = sub.add_parser("list", help="print the case ids a selection expands to")
    ls.add_argument("paths", nargs="*", default=[DEFAULT_SCENARIOS])
    ls.add_argument("--shard")
    ls.add_argument("--tag", action="append", default=[], help="only scenarios carrying this tag")
    _skip_tag_option(ls)
    _keyword_option(ls)
    _max_cases_option(ls)
    ls.add_argument(
        "--estimate",
        action="store_true",
        help="print each case's estimated wall time and peak RSS and the run's total, calibrated on this "
        "machine's earlier runs",
    )
    ls.add_argument("--jobs", default="1", metavar="N|auto", help="with --estimate: the run's --jobs")
    ls.add_argument("--device", choices=("cpu", "cuda"), help="with --estimate: the run's --device")
    ls.add_argument(
        "--cache", type=path_arg, help="with --estimate: the run's --cache (default $PEFT_BENCH_CACHE)"
    )
    add_max_minutes(ls, _positive(float))

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
COMMAND_MODULES: tuple[str, ...] = (
    "report",
    "compare",
    "gate",
    "merge",
    "compat",
    "bisect",
    "site",
    "publish",
    "schema",
)


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
    except OutputFull as exc:
        print(f"peft-bench: error: {exc}", file=sys.stderr)
        return EXIT_OUTPUT_FULL
    except OSError as exc:  # a full disk anywhere else (report, merge, the lock): one line, no traceback
        if not is_disk_full(exc):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"peft-bench: error: {where}cannot write: {exc.strerror}", file=sys.stderr)
        return EXIT_OUTPUT_FULL
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


def _skip_tag_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--skip-tag",
        action="append",
        default=[],
        metavar="TAG",
        help="leave out scenarios carrying this tag (repeatable: any of them), e.g. --skip-tag slow, as the "
        "default `nox -s bench` does",
    )


def _dispatch(args: argparse.Namespace, argv: list[str]) -> int:
    if args.command == "list":
        cases = select_cases(args.paths, args.shard, args.max_cases, args.tag, args.keyword, args.skip_tag)
        if args.estimate or args.max_minutes is not None:
            jobs = parse_jobs(args.jobs, usable_cpus())
            cache = cache_root(args.cache) if args.cache else default_cache_root()
            return list_estimate(args, cases, cache, jobs)
        for case in cases:
            print(case.id)
        return 0
    if args.command == "run":
        return run_command.run(args, argv)
    for module in _command_modules():
        if module.NAME == args.command:
            return module.run(args)
    raise BenchInputError(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
