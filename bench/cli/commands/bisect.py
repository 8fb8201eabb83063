"""`peft-bench bisect SCENARIOS --package P --good V --bad V [--repo PATH] [--bad-when ...]`: the first
release (or commit) where a guarantee breaks. Thin: parsing here, the work in bench.bisect."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench.bisect import criteria
from bench.bisect.driver import search
from bench.bisect.probe import ROOT, Target
from bench.cli.paths import check_out_folder
from bench.engine.sources.cache import default_cache_root
from bench.errors import BenchInputError

NAME = "bisect"
PACKAGES = ("transformers", "peft", "torch", "bitsandbytes", "accelerate")
DEFAULT_CRITERION = "verdict:fail,error,xfail"
CONSTRAINTS = Path("constraints/ci.txt")


def register(sub) -> None:
    p = sub.add_parser(
        NAME,
        help="binary-search releases (or commits of --repo) for the first where a guarantee breaks",
        allow_abbrev=False,
    )
    p.add_argument("paths", nargs="+", help="scenario files or folders to run in each probe")
    p.add_argument(
        "--package",
        required=True,
        help=f"the package to vary ({', '.join(PACKAGES)} or, with "
        "--repo, the distribution the checkout builds)",
    )
    p.add_argument("--good", required=True, help="a release (or git ref with --repo) where it holds")
    p.add_argument("--bad", required=True, help="a newer release (or ref) where it does not")
    p.add_argument("--repo", type=Path, help="bisect commits of this local git checkout of the package")
    p.add_argument("--module", help="import name of the package (default: the package name, - as _)")
    p.add_argument(
        "--bad-when",
        default=DEFAULT_CRITERION,
        help="verdict:V,V | expectation:NAME (raw outcome, through known_failure) | metric:NAME>X | "
        f"gate[:THRESHOLDS.toml] (default {DEFAULT_CRITERION})",
    )
    p.add_argument("--case", action="append", default=[], help="look only at cases whose id contains this")
    p.add_argument(
        "--out", type=Path, help="folder for the probes and the table (default reports/bisect/<name>)"
    )
    p.add_argument(
        "--constraints",
        type=Path,
        help=f"pins for the other packages (default {CONSTRAINTS} of this checkout)",
    )
    p.add_argument("--all", action="store_true", help="probe every candidate (a survey), then answer")
    p.add_argument("--cache", type=Path, help="probe environments cache (default $PEFT_BENCH_CACHE/envs)")
    p.add_argument(
        "--rerun",
        action="store_true",
        help="run each probe's scenarios even where an identical earlier run is stored (the default judges it)",
    )


def run(args: argparse.Namespace) -> int:
    if args.package not in PACKAGES and args.repo is None:
        raise BenchInputError(f"--package {args.package!r}: one of {', '.join(PACKAGES)} (or give --repo)")
    criterion = criteria.parse(args.bad_when)
    for path in args.paths:
        if not Path(path).exists():
            raise BenchInputError("no such scenario file or folder", source=str(path))
    # Paths are the caller's: resolved here, as the probes run elsewhere (bench.bisect.probe.ROOT; issue 32).
    args.paths = [Path(p).absolute() for p in args.paths]
    args.constraints = (args.constraints or ROOT / CONSTRAINTS).absolute()
    if not args.constraints.is_file():
        raise BenchInputError("no such constraints file", source=str(args.constraints))
    if args.good.strip() == args.bad.strip():
        raise BenchInputError(
            f"--good and --bad are the same ({args.good.strip()!r}): give a release (or ref) where the guarantee "
            "holds and a newer one where it does not"
        )
    repo = args.repo.resolve() if args.repo else None
    target = Target(args.package, args.module or args.package.replace("-", "_"), repo)
    name = f"{args.package}-{args.good[:12]}..{args.bad[:12]}".replace("/", "_")
    out = (args.out or Path("reports/bisect") / name).absolute()
    try:
        check_out_folder(out)  # a file there is an input error now, not a traceback after the first probe
    except BenchInputError as exc:
        raise BenchInputError(f"--out: {exc.detail}", source=exc.source) from None
    command = shlex.join(["peft-bench", "bisect", *sys.argv[2:]]) if sys.argv[1:2] == [NAME] else ""
    if not command:
        command = shlex.join(
            [
                "peft-bench",
                "bisect",
                *args.paths,
                "--package",
                args.package,
                "--good",
                args.good,
                "--bad",
                args.bad,
                "--bad-when",
                args.bad_when,
            ]
        )
    answer, text = search(
        target,
        args.good,
        args.bad,
        [str(p) for p in args.paths],
        criterion,
        tuple(args.case),
        out,
        (args.cache or default_cache_root()).absolute(),
        args.constraints.read_text(),
        command,
        probe_all=args.all,
        rerun=args.rerun,
    )
    print(text, end="")
    print(f"peft-bench: bisect table in {out}/bisect.md")
    return 0 if answer.kind in ("found", "ambiguous") else 1
