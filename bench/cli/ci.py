"""CI surfaces: JUnit XML of a run, the GitHub step summary, tag selection, and the shard a CI job matrix or a
Slurm job array gives this job (`--shard auto`). Pure functions of their inputs (the environment is passed in).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

from bench.errors import BenchInputError
from bench.results.atomic import write_text

# `--shard auto` reads these (first match wins). GitHub Actions has no matrix index variable of its own:
# map `strategy.job-index` / `strategy.job-total` onto them in the workflow (docs/ci.md).
GITHUB_INDEX, GITHUB_TOTAL = "PEFT_BENCH_JOB_INDEX", "PEFT_BENCH_JOB_TOTAL"  # 0-based index, as job-index
SLURM_ID, SLURM_MIN, SLURM_COUNT = "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT"

FAILED = ("fail", "error", "xpass")
SKIPPED = ("skip", "xfail", "not_run")


def shard_from_env(env: Mapping[str, str]) -> str:
    """The K/N of this job, from a GitHub Actions matrix (PEFT_BENCH_JOB_INDEX/TOTAL) or a Slurm array."""

    def number(name: str) -> int:
        try:
            return int(env[name])
        except ValueError:
            raise BenchInputError(f"--shard auto: ${name} is not a whole number: {env[name]!r}") from None

    if GITHUB_INDEX in env or GITHUB_TOTAL in env:
        if GITHUB_INDEX not in env or GITHUB_TOTAL not in env:
            raise BenchInputError(f"--shard auto: set both ${GITHUB_INDEX} and ${GITHUB_TOTAL}")
        k, n = number(GITHUB_INDEX) + 1, number(GITHUB_TOTAL)
    elif SLURM_ID in env:
        if SLURM_COUNT not in env:
            raise BenchInputError(f"--shard auto: ${SLURM_ID} is set but ${SLURM_COUNT} is not")
        # Arrays may start at 0 or 1 (--array=0-3, --array=1-4): the index counts from the array's minimum.
        k = number(SLURM_ID) - (number(SLURM_MIN) if SLURM_MIN in env else 0) + 1
        n = number(SLURM_COUNT)
    else:
        raise BenchInputError(
            f"--shard auto: no CI shard in the environment (set ${GITHUB_INDEX} and ${GITHUB_TOTAL}, "
            f"or run inside a Slurm job array)"
        )
    if n < 1 or not 1 <= k <= n:
        raise BenchInputError(f"--shard auto: shard {k} of {n} from the environment is out of range")
    return f"{k}/{n}"


def select_tags(cases: list, tags: list[str]) -> list:
    """The cases whose scenario carries every one of `tags` (no tags: all of them)."""
    return [c for c in cases if all(t in c.scenario.tags for t in tags)]


def junit_xml(results) -> str:
    """One <testcase> per case; fail/error/xpass as <failure> with the case's reason; skip/xfail/not_run
    as <skipped>."""
    cases = results.cases
    suite = ET.Element(
        "testsuite",
        name="peft-bench",
        tests=str(len(cases)),
        failures=str(sum(c.verdict in FAILED for c in cases)),
        skipped=str(sum(c.verdict in SKIPPED for c in cases)),
        errors="0",
        time=f"{sum((c.wall_s or 0.0) for c in cases):.3f}",
    )
    for c in cases:
        tc = ET.SubElement(
            suite, "testcase", classname=c.scenario, name=c.case_id, time=f"{(c.wall_s or 0.0):.3f}"
        )
        reason = c.reason or c.verdict
        if c.verdict in FAILED:
            el = ET.SubElement(tc, "failure", message=reason, type=c.verdict)
            tail = c.worker.log_tail
            el.text = "\n".join([reason, *tail])
        elif c.verdict in SKIPPED:
            ET.SubElement(tc, "skipped", message=f"{c.verdict}: {reason}")
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def write_junit(path: Path, results) -> None:
    write_text(Path(path), junit_xml(results))


def step_summary_path(env: Mapping[str, str]) -> Path | None:
    return Path(env["GITHUB_STEP_SUMMARY"]) if env.get("GITHUB_STEP_SUMMARY") else None


def append_step_summary(env: Mapping[str, str], markdown: str) -> Path | None:
    path = step_summary_path(env)
    if path is not None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(markdown.rstrip("\n") + "\n\n")
    return path
