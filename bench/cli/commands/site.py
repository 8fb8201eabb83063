"""`peft-bench site RESULTS... --out DIR`: one static site over many runs (history, verdicts, trends)."""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

from bench.cli.paths import check_out_folder, path_arg
from bench.report.site.build import check_site_folder, write_site
from bench.results.runs import load_runs, spool_beside
from bench.results.store import loaded_frozen

NAME = "site"


def register(sub) -> None:
    p = sub.add_parser(
        NAME,
        help="build a static site (runs, verdicts across runs, trends, each run's report) from many runs",
        description="Build one self-contained static site from many results (runs over time, library "
        "versions, machines, merged shards), in the order the runs started: index.html (the runs, what "
        "changed between them), compat.html (each case's verdict per run, and every change of verdict), "
        "trends.html (each case's figures across the runs) and runs/<id>/report.html. No external URL: it "
        "works from file:// and from any web server. A bad input is named and nothing is written.",
    )
    p.add_argument("results", nargs="+", type=Path, help="results.json files or folders holding one")
    p.add_argument("--out", type=path_arg, required=True, help="the site's folder (replaced whole)")
    p.add_argument(
        "--with-hostname",
        action="store_true",
        help="name the machine each run ran on (left out by default: a published page should not)",
    )
    p.add_argument(
        "--scenarios-root",
        type=Path,
        action="append",
        default=[],
        help="where the runs' scenario files are, when not under the current folder (for repro scripts)",
    )


def run(args: argparse.Namespace) -> int:
    check_out_folder(args.out)  # before reading anything: a bad --out is refused at once
    check_site_folder(args.out)
    # Each run's text is spooled as its id is hashed, and moved into the site: encoded once, not twice.
    with spool_beside(args.out, args.with_hostname) as spool:
        # Kept to the end: frozen, out of the garbage collector's way (bench.results.store).
        runs = loaded_frozen(load_runs, args.results, spool)
        try:
            site = write_site(
                runs, args.out, with_hostname=args.with_hostname, roots=(*args.scenarios_root, Path.cwd())
            )
        finally:
            gc.unfreeze()
    for rid in site.runs:
        print(f"peft-bench: run {rid}")
    print(f"peft-bench: site of {len(site.runs)} run(s) in {site.out} (open {site.out / 'index.html'})")
    return 0
