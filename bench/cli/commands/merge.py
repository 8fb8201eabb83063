"""`peft-bench merge OUT RESULTS...`: join results files (the shards of a CI job matrix) into one folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.paths import check_out_folder, path_arg
from bench.errors import BenchInputError
from bench.judge.relative import relative_outcomes
from bench.results.atomic import write_text
from bench.results.failures import failure_line
from bench.results.records import Results
from bench.results.shards import Source
from bench.results.store import RESULTS_FILE, holds_results, remove_run_outputs
from bench.results.streaming import open_input, plan, write_merged
from bench.results.summary import SUMMARY_FILE, counts_text
from bench.runner.lock import LOCK_FILE, folder_lock

NAME = "merge"


def register(sub) -> None:
    p = sub.add_parser(
        NAME,
        help="join results files (e.g. the shards of a job matrix) into one",
        description="Join results files into OUT/results.json (+ results.csv, results.parquet, summary.md; "
        "summary.md lists the cases that are not a plain pass: `peft-bench report OUT` gives the answers). "
        "Refuses files of "
        "different suite or library versions, overlapping cases, different scenario sets, and incomplete "
        "or inconsistent sets of shards, an OUT that holds another run's results (unless --overwrite) and "
        "the folder of a run still going.",
    )
    p.add_argument("out", type=path_arg, help="output folder for the merged results")
    p.add_argument("results", nargs="+", type=Path, help="results.json files or folders holding one")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="merge into an OUT that holds another run's results, removing them (and its case files) first",
    )


def _refuse_another_run(out: Path) -> None:
    if holds_results(out):
        raise BenchInputError(
            "this folder holds the results of another run: merge into another folder, or give --overwrite "
            "to replace them (its results, summary and case files are removed)",
            source=str(out),
        )


def failed_shard_lines(sources: list[Source]) -> list[str]:
    """One line per input whose cases did not all finish (`error`, `not_run`): its shard, the scheduler job that
    ran it and its counts, so that a shard whose worker crashed is named, not only counted."""
    lines = []
    for s in sources:
        bad = [c for c in s.results.cases if c.verdict in ("error", "not_run")]
        if not bad:
            continue
        counts: dict[str, int] = {}
        for c in bad:
            counts[c.verdict] = counts.get(c.verdict, 0) + 1
        where = f"shard {s.results.shard}" if s.results.shard else s.path
        job = s.results.scheduler.get("job_id")
        what = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
        lines.append(f"{where}" + (f" (job {job})" if job else "") + f": {what} ({s.path})")
    return lines


def summary_head(results: Results, out: Path) -> list[str]:
    """summary.md's top for a merge: where the "Which to use" answers are, and each case that is not a plain
    pass with how it went wrong (as a run's summary lists them, bench.report.answers_view.summary_lines).

    A merge does not compute the answers: they pool every case's timed calls with a bootstrap
    (bench.report.answers), work that grows with the calls, where a merge's own work is to join files (at
    20,000 cases the answers alone took minutes and gigabytes). `peft-bench report` computes them."""
    out_lines = [
        "## Which to use",
        "",
        f"Not computed by merge (they pool every case's timed calls): `peft-bench report {out}`.",
        "",
    ]
    return out_lines + odd_section([line for c in results.cases if (line := failure_line(c))])


def odd_section(lines: list[str]) -> list[str]:
    return ["## Not a plain pass", "", *lines, ""] if lines else []


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_out_folder(out, lock_file=LOCK_FILE)
    target = (out / RESULTS_FILE).resolve()
    for path in args.results:
        given = (path / RESULTS_FILE if path.is_dir() else path).resolve()
        if given == target:
            raise BenchInputError(
                "is both an input and the output: merge into another folder", source=str(path)
            )
    if not args.overwrite:
        _refuse_another_run(out)  # before reading the inputs; checked again under the lock
    # Each input's file-level fields and small per-case columns; its cases are read while they are written
    # (bench.results.streaming), so that memory does not grow with them.
    inputs = [open_input(p, str(p)) for p in args.results]
    command = ("peft-bench", NAME, str(out), *map(str, args.results))
    # faster_than compares sibling cases, which may have run in different shards: decided again on the whole
    # (relative_outcomes, over each group of siblings). The checks and this before the lock and any removal.
    ready = plan(inputs, command=command, decide=relative_outcomes)
    odd: list[str] = []
    # Under the folder's lock, as a run writes there: a run still going in OUT would write over the merge.
    with folder_lock(out):
        if args.overwrite:
            remove_run_outputs(out)
        else:
            _refuse_another_run(out)
        merged = write_merged(out, ready, odd=odd.append)
        write_text(out / SUMMARY_FILE, merged.summary(summary_head(merged.results, out) + odd_section(odd)))
    print(
        f"peft-bench: merged {len(inputs)} file(s), {merged.cases} case(s): "
        f"{counts_text(merged.counts, merged.unverified)}"
    )
    for line in failed_shard_lines([i.source for i in inputs]):
        print(f"peft-bench: {line}")
    print(f"peft-bench: results in {out}/{RESULTS_FILE}, summary in {out}/summary.md")
    return 0
