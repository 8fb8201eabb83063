"""Join results files into one: the shards of a CI job matrix, or runs of disjoint parts of one selection.

A merged file claims to be one run, so merge refuses whatever would make that claim false: files from
another peft-bench (or results schema) version, other library versions or another device (verdicts and
timings would not be comparable), a case that appears twice, files that select different scenarios, and
shards that are not the complete, consistent set of shards of one selection.

Shards are checked against the round-robin rule of bench.spec.cases.Shard: shard K/N holds the cases at
positions i % N == K - 1 of the selection's ids sorted. The union of all N shards is the selection, so each
file must hold exactly the ids that rule gives it; a file from another selection shows up as ids in the
wrong shard. Pure functions: they return the merged Results or raise BenchInputError naming the file.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, fields, replace

from bench.errors import BenchInputError
from bench.results.brief import listing
from bench.results.records import CaseResult, Results, WorkerInfo
from bench.spec.cases import Shard

# Libraries whose version changes verdicts and timings: results measured under different ones are not one run.
VERDICT_LIBRARIES = ("torch", "transformers", "peft", "accelerate", "bitsandbytes")


@dataclass(frozen=True)
class Source:
    """One input file, loaded."""

    path: str
    results: Results


def merge(sources: list[Source], *, command: tuple[str, ...] = (), created_at: str | None = None) -> Results:
    ordered = checked(sources)
    top = merged_top(ordered, command=command, created_at=created_at)
    return replace(top, cases=tuple(with_provenance(c, s) for s in ordered for c in s.results.cases))


def checked(sources: list[Source]) -> list[Source]:
    """The sources in the order their cases are merged (shards in K order), or BenchInputError for any that
    cannot be one run with the others. Reads only the file-level fields and each case's case_id."""
    if not sources:
        raise BenchInputError("merge: no results file given")
    first = sources[0]
    for other in sources[1:]:
        _check_same_run_kind(first, other)
    sharded = [s for s in sources if s.results.shard]
    if sharded and len(sharded) != len(sources):
        plain = next(s for s in sources if not s.results.shard)
        raise BenchInputError(
            f"is not a shard, but {sharded[0].path} is shard {sharded[0].results.shard}: "
            "merge either the shards of one selection or unsharded runs, not both",
            source=plain.path,
        )
    # The shard structure first: "shard 2/4 is missing" says more than the overlap it may cause.
    if sharded:
        sources = _complete_shard_set(sources)
    _check_no_duplicate_cases(sources)
    _check_same_scenario_set(sources)
    if sharded:
        _check_same_selection(sources)
        _check_round_robin(sources)
    return sources


def merged_top(
    ordered: list[Source], *, command: tuple[str, ...] = (), created_at: str | None = None
) -> Results:
    """The merged file-level fields (no cases) of checked sources: their `jobs`, options and selection (they
    share them, or only some files record them), and the start of the earliest (created_at is when the run
    started; the merge's own time only where no source says when it started)."""
    first = ordered[0]
    cpu = [s.results.parent_cpu_s for s in ordered]
    selection = next((s.results for s in ordered if s.results.selection_sha256), None)
    return Results(
        schema_version=first.results.schema_version,
        suite_version=first.results.suite_version,
        verdict_rules=first.results.verdict_rules,
        created_at=created_at or _earliest([s.results.created_at for s in ordered]),
        jobs=first.results.jobs,
        options=next((s.results.options for s in ordered if s.results.options is not None), None),
        selection_cases=selection.selection_cases if selection and first.results.shard else None,
        selection_sha256=selection.selection_sha256 if selection and first.results.shard else "",
        environment=first.results.environment,
        scenario_set=first.results.scenario_set,
        cases=(),
        command=command,
        shard=None,
        parent_cpu_s=None if any(c is None for c in cpu) else sum(cpu),
        interrupted=any(s.results.interrupted for s in ordered),
    )


def _earliest(times: list[str]) -> str:
    """The earliest of ISO times (the same instant written with any offset); now where none parses."""
    parsed = []
    for t in times:
        try:
            when = _dt.datetime.fromisoformat(t)
        except (TypeError, ValueError):
            continue
        if when.tzinfo is not None:
            parsed.append((when, t))
    if not parsed:
        return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return min(parsed)[1]


def _provenance(source: Source, shard: str | None, job: str | None) -> dict[str, str | None]:
    # The merged file has one environment block; each case keeps where it ran and which file it came from.
    return {
        "results_file": source.path,
        "hostname": source.results.environment.hostname,
        # A case of a merged file merged again keeps the shard it ran in.
        "shard": source.results.shard or shard,
        # The job the case recorded it ran in first: a case a --resume kept ran in the job before it.
        "job": job or source.results.scheduler.get("job_id"),
    }


def with_provenance(case: CaseResult, source: Source) -> CaseResult:
    worker = replace(case.worker, **_provenance(source, case.worker.shard, case.worker.job))
    return replace(case, worker=worker)


_WORKER_KEY = '"worker": {'
_WORKER_FIELDS = tuple(f.name for f in fields(WorkerInfo))
_DECODER = json.JSONDecoder()


def with_provenance_text(text: str, source: Source) -> str | None:
    """with_provenance on a case's JSON text as a save encodes it (bench.results.writing), without parsing the
    rest of the case: its `worker` object is decoded, given the same four fields and encoded again in place.
    None where that is not certain to be right: the key found other than once (a quotation mark inside a
    JSON string is escaped, so a match is a key, but a nested object could hold one too), or a worker object
    with other fields than WorkerInfo's, in other order (not what a save of a record writes). The caller then
    builds the record."""
    at = text.find(_WORKER_KEY)
    if at < 0 or text.find(_WORKER_KEY, at + 1) >= 0:
        return None
    start = at + len(_WORKER_KEY) - 1
    try:
        worker, end = _DECODER.raw_decode(text, start)
    except ValueError:
        return None
    if not isinstance(worker, dict) or tuple(worker) != _WORKER_FIELDS:
        return None
    worker.update(_provenance(source, worker["shard"], worker["job"]))
    return text[:start] + json.dumps(worker, allow_nan=False) + text[end:]


def _check_same_run_kind(a: Source, b: Source) -> None:
    ra, rb = a.results, b.results
    if ra.schema_version != rb.schema_version:
        raise BenchInputError(
            f"results schema version {rb.schema_version} differs from {a.path}'s {ra.schema_version}",
            source=b.path,
        )
    if ra.verdict_rules != rb.verdict_rules:
        raise BenchInputError(
            f"judged under verdict rules {rb.verdict_rules}, {a.path} under {ra.verdict_rules}: "
            "their verdicts do not mean the same thing; rerun the older one",
            source=b.path,
        )
    if ra.suite_version != rb.suite_version:
        raise BenchInputError(
            f"written by peft-bench {rb.suite_version}, but {a.path} by {ra.suite_version}: "
            "results of different suite versions cannot be merged",
            source=b.path,
        )
    for lib in VERDICT_LIBRARIES:
        va, vb = ra.environment.libraries.get(lib), rb.environment.libraries.get(lib)
        if va != vb:
            raise BenchInputError(
                f"ran with {lib} {vb or 'not installed'}, but {a.path} with {va or 'not installed'}: "
                "results measured under different library versions are not one run",
                source=b.path,
                field=f"environment.libraries.{lib}",
            )
    if ra.environment.device != rb.environment.device:
        raise BenchInputError(
            f"ran on {rb.environment.device}, but {a.path} on {ra.environment.device}",
            source=b.path,
            field="environment.device",
        )
    if ra.jobs != rb.jobs:
        # The merged file has one `jobs`, and compare reads timings as absolute only between equal ones.
        raise BenchInputError(
            f"ran {rb.jobs} case(s) at a time, but {a.path} {ra.jobs}: timings under different --jobs are not "
            "one run; rerun one with the other's --jobs",
            source=b.path,
            field="jobs",
        )
    if ra.options is not None and rb.options is not None and ra.options != rb.options:
        diff = [
            f.name for f in fields(ra.options) if getattr(ra.options, f.name) != getattr(rb.options, f.name)
        ]
        raise BenchInputError(
            f"ran with other options than {a.path} ({', '.join(diff)}): verdicts under different options "
            "are not one run",
            source=b.path,
            field="options",
        )


def _check_no_duplicate_cases(sources: list[Source]) -> None:
    seen: dict[str, str] = {}
    for s in sources:
        for c in s.results.cases:
            if c.case_id in seen:
                where = "twice in this file" if seen[c.case_id] == s.path else f"also in {seen[c.case_id]}"
                raise BenchInputError(
                    f"case {c.case_id!r} is {where}: the files overlap (the same run given twice?)",
                    source=s.path,
                )
            seen[c.case_id] = s.path


def _check_same_scenario_set(sources: list[Source]) -> None:
    first = sources[0]
    for s in sources[1:]:
        if s.results.scenario_set != first.results.scenario_set:
            raise BenchInputError(
                f"selected scenarios {_names(s.results.scenario_set)}, but {first.path} selected "
                f"{_names(first.results.scenario_set)}: "
                + (
                    "the shards of one selection select the same scenarios (a shard of another run?)"
                    if s.results.shard
                    else "unsharded runs merge only when they select the same scenarios"
                ),
                source=s.path,
                field="scenario_set",
            )


def _complete_shard_set(sources: list[Source]) -> list[Source]:
    """All N shards of one selection, each once. Returns them in K order."""
    by_index: dict[int, Source] = {}
    count: int | None = None
    for s in sources:
        try:
            shard = Shard.parse(s.results.shard or "")
        except BenchInputError as exc:
            raise BenchInputError(exc.detail, source=s.path, field="shard") from None
        if count is not None and shard.count != count:
            first = next(iter(by_index.values()))
            raise BenchInputError(
                f"is shard {s.results.shard}, but {first.path} is shard {first.results.shard}: "
                "shards of one selection share N",
                source=s.path,
                field="shard",
            )
        count = shard.count
        if shard.index in by_index:
            raise BenchInputError(
                f"is shard {s.results.shard}, and so is {by_index[shard.index].path}", source=s.path
            )
        by_index[shard.index] = s
    assert count is not None
    missing = [f"{k}/{count}" for k in range(1, count + 1) if k not in by_index]
    if missing:
        absent = [k for k in range(1, count + 1) if k not in by_index]
        raise BenchInputError(
            f"merge: missing shard(s) {listing(missing, noun='shards')} of {count}: the merged file would silently lack "
            "their cases (given: "
            + listing([s.path for s in sources], noun="files")
            + ")"
            + "".join(f"\n{line}" for line in rerun_lines(list(by_index.values()), absent, count))
        )
    return [by_index[k] for k in range(1, count + 1)]


def rerun_lines(present: list[Source], shards: list[int], count: int) -> list[str]:
    """What names the jobs of `shards` (1-based K of N) and reruns only them, from the scheduler facts the
    `present` shards recorded (Results.scheduler): for a Slurm array, the array task ids and the exact sbatch
    command; for a GitHub Actions matrix, the gh command; for a Kubernetes Indexed Job, the indexes. [] when the
    shards were not run by a scheduler this knows."""
    import shlex

    facts = [s.results.scheduler for s in present if s.results.scheduler]
    if not facts or not shards:
        return []
    kind = facts[0].get("kind")
    if kind == "slurm":
        slurm = next((f for f in facts if "array_job_id" in f and "shard_base" in f), None)
        if slurm is None:
            return []
        base = int(slurm["shard_base"])
        tasks = [base + k - 1 for k in shards]
        jobs = ", ".join(f"{slurm['array_job_id']}_{t}" for t in tasks)
        ids = ",".join(map(str, tasks))
        lines = [f"Slurm array job {slurm['array_job_id']}: task(s) {ids} (job {jobs}) wrote no results"]
        # N and the first task id, as the rerun's own smaller array would not give them; a task killed midway
        # finishes its partial run (examples/slurm/run_array.sbatch reads all three).
        export = (
            f"--export=ALL,PEFT_BENCH_SHARD_COUNT={count},PEFT_BENCH_SHARD_BASE={base},PEFT_BENCH_RESUME=1"
        )
        script = slurm.get("script")
        if script:
            command = f"sbatch --array={ids} {export} {shlex.quote(script)}"
            if slurm.get("submit_dir"):
                command = f"cd {shlex.quote(slurm['submit_dir'])} && {command}"
            lines.append(f"to rerun only them: {command}")
            lines.append("(in the environment the array was submitted with: --export=ALL passes it on)")
        else:
            lines.append(
                f"to rerun only them: sbatch --array={ids} {export} <the array's batch script> (set "
                "$PEFT_BENCH_SLURM_SCRIPT in it to have this line name it)"
            )
        return lines
    if kind == "github" and "run_id" in facts[0]:
        g = facts[0]
        repo = f" --repo {g['repository']}" if g.get("repository") else ""
        indexes = ", ".join(str(k - 1) for k in shards)
        return [
            f"GitHub Actions run {g['run_id']}: matrix job index(es) {indexes} wrote no results",
            f"to rerun only the failed jobs: gh run rerun {g['run_id']} --failed{repo}",
        ]
    if kind == "kubernetes":
        indexes = ",".join(str(k - 1) for k in shards)
        return [
            f"Kubernetes Indexed Job: completion index(es) {indexes} wrote no results; rerun them with "
            f"PEFT_BENCH_SHARD_COUNT={count} (each pod's JOB_COMPLETION_INDEX its index)"
        ]
    return []


def _check_same_selection(ordered: list[Source]) -> None:
    """Shards of one selection record the same one (Results.selection_sha256), and together hold all of its
    cases. A shard run after its scenario file changed, or with another -k or --tag, may still hold ids that
    fit the round-robin of the others: the merged file would lose a case, or mix two versions of a scenario.
    Files from before the fingerprint are not checked."""
    recorded = [s for s in ordered if s.results.selection_sha256]
    for s in recorded[1:]:
        if s.results.selection_sha256 != recorded[0].results.selection_sha256:
            raise BenchInputError(
                f"shard {s.results.shard} selected other cases than {recorded[0].path} (shard "
                f"{recorded[0].results.shard}): {s.results.selection_cases} against "
                f"{recorded[0].results.selection_cases}, or the same ids with other scenario contents (a "
                "scenario file changed between the jobs, or another -k, --tag or --skip-tag): rerun every "
                "shard from one selection",
                source=s.path,
                field="selection_sha256",
            )
    if recorded and len(recorded) == len(ordered):
        held = sum(len(s.results.cases) for s in ordered)
        if held != recorded[0].results.selection_cases:
            raise BenchInputError(
                f"the shards hold {held} cases, but their selection had {recorded[0].results.selection_cases}",
                source=recorded[0].path,
                field="selection_cases",
            )


def _check_round_robin(ordered: list[Source]) -> None:
    """Each shard holds exactly the ids Shard.select gives it over the union (the selection, sorted)."""
    count = len(ordered)
    union = sorted(c.case_id for s in ordered for c in s.results.cases)
    for k, s in enumerate(ordered, 1):
        expected = {cid for i, cid in enumerate(union) if i % count == k - 1}
        actual = {c.case_id for c in s.results.cases}
        if actual != expected:
            stray = sorted(actual - expected) or sorted(expected - actual)
            raise BenchInputError(
                f"as shard {s.results.shard} it should hold {len(expected)} of the {len(union)} cases, "
                f"but holds {len(actual)} ({', '.join(stray[:3])} out of place): not shards of one selection",
                source=s.path,
            )


def _names(names: tuple[str, ...]) -> str:
    return "[" + listing(names, noun="scenarios") + "]" if names else "[]"
