"""`peft-bench merge OUT RESULTS...`: join results files (the shards of a CI job matrix) into one folder."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from bench.cli.paths import check_out_folder, path_arg
from bench.errors import BenchInputError
from bench.judge.relative import relative_outcomes
from bench.report.flags import failure_of
from bench.results.records import Results
from bench.results.shards import Source, merge
from bench.results.store import RESULTS_FILE, holds_results, load, remove_run_outputs, save
from bench.results.summary import counts_line, write_summary
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
    odd = [c for c in results.cases if c.verdict != "pass"]
    if odd:
        out_lines += ["## Not a plain pass", ""]
        for c in odd:
            f = failure_of(c)
            known = f"; known failure: {f.known_failure}" if f.known_failure else ""
            out_lines.append(f"- `{c.case_id}` {c.verdict}: {f.kind}{known}")
        out_lines.append("")
    return out_lines


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
    sources = [Source(str(p), load(p)) for p in args.results]
    command = ("peft-bench", NAME, str(out), *map(str, args.results))
    merged = merge(sources, command=command)
    # faster_than compares sibling cases, which may have run in different shards: decide it again on the whole.
    jobs = max(s.results.jobs for s in sources)
    merged = replace(merged, cases=relative_outcomes(merged.cases, jobs))
    # Under the folder's lock, as a run writes there: a run still going in OUT would write over the merge.
    with folder_lock(out):
        if args.overwrite:
            remove_run_outputs(out)
        else:
            _refuse_another_run(out)
        save(out, merged)
        write_summary(out, merged, summary_head(merged, out))
    print(f"peft-bench: merged {len(sources)} file(s), {len(merged.cases)} case(s): {counts_line(merged)}")
    for line in failed_shard_lines(sources):
        print(f"peft-bench: {line}")
    print(f"peft-bench: results in {out}/{RESULTS_FILE}, summary in {out}/summary.md")
    return 0
