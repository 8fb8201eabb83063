"""CI surfaces: JUnit XML of a run, the GitHub step summary, tag selection, the shard a CI job matrix, a Slurm job
array or a Kubernetes Indexed Job gives this job (`--shard auto`), and which scheduler job a run was (recorded in
its results, so that merge can name a missing shard's job and print the command that reruns only it). Pure
functions of their inputs (the environment is passed in).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

from bench.cli.paths import check_named_out_file
from bench.errors import BenchInputError
from bench.results.atomic import write_text
from bench.results.failures import known_failures_of, unverified_reason

# `--shard auto` reads these (first match wins). GitHub Actions has no matrix index variable of its own:
# map `strategy.job-index` / `strategy.job-total` onto them in the workflow (docs/ci.md).
GITHUB_INDEX, GITHUB_TOTAL = "PEFT_BENCH_JOB_INDEX", "PEFT_BENCH_JOB_TOTAL"  # 0-based index, as job-index
SLURM_ID, SLURM_MIN, SLURM_COUNT = "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT"
# A Kubernetes Indexed Job exports each pod's 0-based index, but not the Job's `completions`: set it in the manifest.
K8S_INDEX = "JOB_COMPLETION_INDEX"
# N, and the array task id of shard 1, where the scheduler's own count does not say them: a Kubernetes Indexed Job
# (SHARD_COUNT required), or a Slurm rerun of some tasks only (`sbatch --array=2` has count 1 and min 2; merge
# prints the rerun with both set, so the task is still shard 3 of 4).
SHARD_COUNT, SHARD_BASE = "PEFT_BENCH_SHARD_COUNT", "PEFT_BENCH_SHARD_BASE"
# The batch script of a Slurm array, recorded so that merge can print the sbatch command that reruns a task
# (inside a job the script runs as a spooled copy; examples/slurm/run_array.sbatch sets it from scontrol).
SLURM_SCRIPT = "PEFT_BENCH_SLURM_SCRIPT"

FAILED = ("fail", "error", "xpass")
SKIPPED = ("skip", "xfail", "not_run")


def _number(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise BenchInputError(f"--shard auto: ${name} is not a whole number: {env[name]!r}") from None


def _slurm_base_count(env: Mapping[str, str]) -> tuple[int, int]:
    """The task id of shard 1, and N, of a Slurm array task: PEFT_BENCH_SHARD_BASE / _COUNT when set (a rerun of
    some tasks), else the array's own minimum and count."""
    base = (
        _number(env, SHARD_BASE) if SHARD_BASE in env else _number(env, SLURM_MIN) if SLURM_MIN in env else 0
    )
    if SHARD_COUNT in env:
        return base, _number(env, SHARD_COUNT)
    if SLURM_COUNT not in env:
        raise BenchInputError(f"--shard auto: ${SLURM_ID} is set but ${SLURM_COUNT} is not")
    return base, _number(env, SLURM_COUNT)


def shard_from_env(env: Mapping[str, str]) -> str:
    """The K/N of this job, from a GitHub Actions matrix (PEFT_BENCH_JOB_INDEX/TOTAL), a Slurm array or a
    Kubernetes Indexed Job (JOB_COMPLETION_INDEX with PEFT_BENCH_SHARD_COUNT)."""
    if GITHUB_INDEX in env or GITHUB_TOTAL in env:
        if GITHUB_INDEX not in env or GITHUB_TOTAL not in env:
            raise BenchInputError(f"--shard auto: set both ${GITHUB_INDEX} and ${GITHUB_TOTAL}")
        k, n = _number(env, GITHUB_INDEX) + 1, _number(env, GITHUB_TOTAL)
    elif SLURM_ID in env:
        # Arrays may start at 0 or 1 (--array=0-3, --array=1-4): the index counts from the array's minimum.
        base, n = _slurm_base_count(env)
        k = _number(env, SLURM_ID) - base + 1
    elif K8S_INDEX in env:
        if SHARD_COUNT not in env:
            raise BenchInputError(
                f"--shard auto: ${K8S_INDEX} is set but ${SHARD_COUNT} is not: Kubernetes does not export the "
                f"Job's completions; set ${SHARD_COUNT} to it in the pod's env"
            )
        k, n = _number(env, K8S_INDEX) + 1, _number(env, SHARD_COUNT)
    else:
        raise BenchInputError(
            f"--shard auto: no CI shard in the environment (set ${GITHUB_INDEX} and ${GITHUB_TOTAL}, "
            f"or run inside a Slurm job array or a Kubernetes Indexed Job with ${SHARD_COUNT})"
        )
    if n < 1 or not 1 <= k <= n:
        raise BenchInputError(f"--shard auto: shard {k} of {n} from the environment is out of range")
    return f"{k}/{n}"


def scheduler_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """The scheduler job this process runs in, as recorded in Results.scheduler ({} outside one). Never raises:
    a value it cannot read is left out."""
    info: dict[str, str] = {}

    def put(key: str, name: str) -> None:
        if env.get(name):
            info[key] = env[name]

    if env.get("SLURM_JOB_ID"):
        info["kind"] = "slurm"
        put("array_job_id", "SLURM_ARRAY_JOB_ID")
        put("array_task_id", SLURM_ID)
        if "array_job_id" in info and "array_task_id" in info:
            info["job_id"] = f"{info['array_job_id']}_{info['array_task_id']}"
            try:
                base, count = _slurm_base_count(env)
                info["shard_base"], info["shard_count"] = str(base), str(count)
            except BenchInputError:
                pass
        else:
            info["job_id"] = env["SLURM_JOB_ID"]
        put("script", SLURM_SCRIPT)
        put("submit_dir", "SLURM_SUBMIT_DIR")
        put("node", "SLURMD_NODENAME")
    elif env.get(K8S_INDEX):
        info["kind"] = "kubernetes"
        put("completion_index", K8S_INDEX)
        put("shard_count", SHARD_COUNT)
        put("job_id", "HOSTNAME")  # the pod's name: <job>-<index>-<suffix>
    elif env.get("GITHUB_ACTIONS") == "true":
        info["kind"] = "github"
        put("run_id", "GITHUB_RUN_ID")
        put("run_attempt", "GITHUB_RUN_ATTEMPT")
        put("repository", "GITHUB_REPOSITORY")
        put("job", "GITHUB_JOB")
        put("job_index", GITHUB_INDEX)
        if "run_id" in info:
            info["job_id"] = f"{info['run_id']}/{info.get('job', '?')}" + (
                f"[{info['job_index']}]" if "job_index" in info else ""
            )
    return info


def select_tags(cases: list, tags: list[str], skip_tags: list[str] = ()) -> list:
    """The cases whose scenario carries every one of `tags` (no tags: all of them) and none of `skip_tags`."""
    return [
        c
        for c in cases
        if all(t in c.scenario.tags for t in tags) and not any(t in c.scenario.tags for t in skip_tags)
    ]


# Characters XML 1.0 cannot hold, even escaped: a reason quoting a terminal's colour codes (ESC) made the whole
# file unreadable to a CI's JUnit parser, and every case in it was lost.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """`text` with each character XML cannot hold written as \\xNN (or \\uNNNN), so it stays readable."""
    return _NOT_XML.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", text
    )


def junit_xml(results) -> str:
    """One <testcase> per case; fail/error/xpass as <failure> with the case's reason; skip/xfail/not_run
    as <skipped> (an xfail with the known failure its marker matched); an unverified pass as a pass with a
    property "unverified" and its reason in system-out, so that it is never read as a plain pass."""
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
            suite, "testcase", classname=_xml_text(c.scenario), name=_xml_text(c.case_id), time=_time(c)
        )
        reason = _xml_text(c.reason or c.verdict)
        if c.verdict in FAILED:
            el = ET.SubElement(tc, "failure", message=reason, type=c.verdict)
            el.text = "\n".join([reason, *map(_xml_text, c.worker.log_tail)])
        elif c.verdict in SKIPPED:
            known = "; ".join(known_failures_of(c))
            message = f"{c.verdict}: {reason}" + (f"; known failure: {_xml_text(known)}" if known else "")
            ET.SubElement(tc, "skipped", message=message)
        elif why := unverified_reason(c):
            props = ET.SubElement(tc, "properties")
            ET.SubElement(props, "property", name="unverified", value=_xml_text(why))
            ET.SubElement(tc, "system-out").text = f"unverified pass: {_xml_text(why)}"
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def _time(case) -> str:
    """The case's own time; for a worker that reported none (an error), the parent's time of its process."""
    wall = case.wall_s if case.wall_s is not None else case.worker.wall_s
    return f"{(wall or 0.0):.3f}"


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


# What `run` appends of its summary.md to $GITHUB_STEP_SUMMARY: GitHub takes at most 1 MiB per step, and a
# gate or report in the same step appends after it (a summary.md is about 500 bytes a case: 2,000 cases pass it).
STEP_SUMMARY_BYTES = 512 * 1024


def bounded_summary(text: str, out_dir: Path, limit: int = STEP_SUMMARY_BYTES) -> str:
    """summary.md's text for the step summary: whole when it fits, else cut at a line before `limit` bytes
    (the counts, the answers and the failures come first), saying where the rest is."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    head = data[:limit].decode("utf-8", errors="ignore").rsplit("\n", 1)[0]
    return (
        f"{head}\n\n... cut at {limit // 1024} KiB for the step summary (GitHub takes 1 MiB a step): the whole "
        f"summary is {Path(out_dir) / 'summary.md'} ({len(data) // 1024} KiB)\n"
    )


def check_ci_outputs(junit_xml: Path | None, env: Mapping[str, str]) -> None:
    """Before any work: the JUnit file and the step summary can be written (a folder, a missing folder or a
    read-only place there was a traceback after every case had run, and the run's exit code lost)."""
    if junit_xml:
        check_named_out_file(Path(junit_xml), "--junit-xml")
    if (summary := step_summary_path(env)) is not None:
        check_named_out_file(summary, "$GITHUB_STEP_SUMMARY")


def write_ci_outputs(junit_xml: Path | None, out_dir: Path, results, env: Mapping[str, str]) -> None:
    """After a run: the JUnit XML when asked for, and the run's summary.md appended to the step summary."""
    if junit_xml:
        write_junit(junit_xml, results)
        print(f"peft-bench: JUnit XML in {junit_xml}")
    summary = append_step_summary(env, bounded_summary((Path(out_dir) / "summary.md").read_text(), out_dir))
    if summary is not None:
        print(f"peft-bench: summary appended to {summary}")
