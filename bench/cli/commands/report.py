"""`peft-bench report RESULTS`: Markdown and HTML reports, and a reproduction script per failing case."""

from __future__ import annotations

import argparse
import gc
import os
from pathlib import Path

from bench.cli.ci import append_step_summary, check_ci_outputs, step_summary_path
from bench.cli.paths import check_out_file, check_out_folder, path_arg
from bench.errors import BenchInputError
from bench.report import markdown
from bench.report.build import write_reports
from bench.results.brief import clipped
from bench.results.frames import export, frame
from bench.results.records import Results
from bench.results.store import load, loaded_frozen

NAME = "report"
MAX_LINES = 10  # files and cases without a script named on the terminal; the report lists them
FORMATS = ("md", "html")


def register(sub) -> None:
    p = sub.add_parser(
        NAME,
        help="render Markdown and HTML reports (and reproduction scripts) from a results file",
        description="Write report.md and/or report.html, and repro/repro_<case>.py for each failing case, "
        "next to the results (or into --out). --table exports the tidy table (one row per case, step and "
        "metric) as CSV, JSON or Parquet.",
    )
    p.add_argument("results", type=Path, help="results.json or the folder holding it")
    p.add_argument(
        "--format", action="append", choices=FORMATS, help="md or html (repeatable; default: both)"
    )
    p.add_argument("--out", type=path_arg, help="folder for the reports (default: the results folder)")
    p.add_argument(
        "--table",
        type=path_arg,
        action="append",
        default=[],
        help="also write the tidy table (.csv, .json, .parquet)",
    )
    p.add_argument(
        "--scenarios-root",
        type=Path,
        action="append",
        default=[],
        help="where the run's scenario files are, when not under the current folder (for repro scripts)",
    )
    p.add_argument("--print", action="store_true", help="also print the Markdown report to stdout")


# What a run folder holds that a table export must never replace.
RUN_FILES = ("results.json", "results.csv", "results.parquet", "summary.md")


def _refuse_a_runs_own_file(path: Path) -> None:
    """--table Rt/results.json replaced the run's results with the table, and the run could no longer be read."""
    path = Path(path)
    if path.name in RUN_FILES and (path.absolute().parent / "results.json").is_file():
        raise BenchInputError(
            f"--table: would replace a run's own {path.name}; give the table another name", source=str(path)
        )


def run(args: argparse.Namespace) -> int:
    folder = args.results if args.results.is_dir() else args.results.parent
    out = args.out or folder
    check_out_folder(out)  # before loading: a bad --out is refused at once
    if args.print and "md" not in (args.format or FORMATS):  # before any report is written
        raise BenchInputError("--print prints the Markdown report: add --format md")
    for path in args.table:
        check_out_file(path)
        _refuse_a_runs_own_file(path)
    check_ci_outputs(None, os.environ)  # the step summary the report is appended to
    results = load_frozen(args.results)
    try:
        return _report(args, results, folder, out)
    finally:
        gc.unfreeze()


def load_frozen(path: Path) -> Results:
    """The results at `path`, loaded for a report and frozen (bench.results.store.loaded_frozen): the caller
    calls gc.unfreeze() when it is done with them."""
    return loaded_frozen(load, path)


def _report(args: argparse.Namespace, results: Results, folder: Path, out: Path) -> int:
    formats = tuple(dict.fromkeys(args.format or FORMATS))
    roots = (*args.scenarios_root, Path.cwd())
    if args.table:
        df = frame(results)
        for path in args.table:
            export(df, path)  # raises BenchInputError naming the file before any report is written
    written = write_reports(results, out, formats, roots=roots, results_dir=folder)
    for path in args.table:
        print(f"peft-bench: table in {path}")
    paths = sorted(written.paths, key=lambda p: p.suffix == ".py")  # the reports first, then the scripts
    for path in paths[:MAX_LINES]:
        print(f"peft-bench: wrote {path}")
    if len(paths) > MAX_LINES:
        print(f"peft-bench: ... and {len(written.paths) - MAX_LINES} more file(s) (the report links them)")
    unwritten = [r for r in written.repros.values() if r.path is None]
    for repro in unwritten[:MAX_LINES]:
        print(f"peft-bench: {repro.case_id}: {clipped(repro.note)}")
    if len(unwritten) > MAX_LINES:
        print(
            f"peft-bench: ... and {len(unwritten) - MAX_LINES} more case(s) without a script (see the report)"
        )
    if args.print:
        print(markdown.render(results, written.repros, results_dir=folder, out_dir=out), end="")
    # Rendered again only where a step summary wants it: a second render of a large run is seconds.
    if step_summary_path(os.environ) is None:
        return 0
    summary = append_step_summary(
        os.environ, markdown.render(results, written.repros, results_dir=folder, out_dir=out)
    )
    if summary is not None:
        print(f"peft-bench: report appended to {summary}")
    return 0
