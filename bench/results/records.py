"""The records a run produces, from one step up to a whole results file.

Frozen dataclasses with an explicit schema; `to_dict` / `from_dict` give the JSON round trip (see
docs/results-schema.md). Units are in the field names. A figure that could not be measured here is None and
its reason is in the record's `unavailable` map: never a made-up 0. What one step measured is in
bench.results.measures, a serve step's records in bench.results.serving_records; import them from there.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from bench.results.measures import (
    AdapterEffect,
    CompileStats,
    MemoryStats,
    OracleAgreement,
    OutputCheck,
    RepeatStats,
    StateContrast,
    TimingStats,
    TrainStats,
)
from bench.results.serving_records import ServingRecord

__all__ = [
    "FAILING_VERDICTS",
    "VERDICTS",
    "CaseResult",
    "Environment",
    "Footprint",
    "Outcome",
    "Results",
    "StepRecord",
    "TimingPolicy",
    "Verdict",
    "WorkerInfo",
]

T = TypeVar("T")


class Verdict(enum.StrEnum):
    """A case's verdict. A str, so JSON, CSV and comparisons with the plain names keep working."""

    PASS = "pass"
    FAIL = "fail"  # an expectation does not hold
    XFAIL = "xfail"  # a known upstream failure happened, as marked
    XPASS = "xpass"  # a known failure did not happen: the marker is stale (fails the run)
    ERROR = "error"  # the case could not be decided: a worker fault, a bad source, no reference
    SKIP = "skip"  # cannot run here (e.g. bitsandbytes missing), with the reason
    NOT_RUN = "not_run"  # interrupted or pending


VERDICTS = tuple(v.value for v in Verdict)
FAILING_VERDICTS = (Verdict.FAIL, Verdict.XPASS, Verdict.ERROR)


@dataclass(frozen=True)
class Outcome:
    """One expectation of one step, decided."""

    expectation: str
    expected: str
    actual: str
    held: bool
    status: str  # pass | fail | xfail | xpass; error: the check itself could not be made (no reference)
    message: str = ""
    known_failure: str | None = None


@dataclass(frozen=True)
class StepRecord:
    index: int
    op: str
    args: dict[str, Any]
    status: str  # pass | fail | xfail | xpass | error | not_run
    strict: bool  # ran under error_on_recompile=True
    op_time_ms: float | None  # the API call itself (the swap, the toggle, the compile wrap)
    first_call_ms: float | None  # the first model call after the op: carries any compile or recompile
    timing: TimingStats | None  # warm repeated calls (forward/generate steps)
    compile: CompileStats | None
    memory: MemoryStats | None
    output: OutputCheck | None
    effects: tuple[AdapterEffect, ...] = ()  # files written before `contrast` replaced it; empty now
    # The new state's reference against the previous state's (docs/verdicts.md, distinguishability).
    contrast: StateContrast | None = None
    outcomes: tuple[Outcome, ...] = ()
    error: str | None = None  # exception raised by the op, "Type: message"
    # The RecompileError torch raised under error_on_recompile=True (strict steps), its own text: the proof
    # that the guard fired, kept apart from the counted recompile reasons so it cannot be confused with them.
    recompile_error: str | None = None
    notes: tuple[str, ...] = ()  # things the harness did that change what was measured (e.g. a warm-up call)
    # Bytes of adapter weights this step moved (loads and swaps), and the plain tensor-copy floor for them.
    adapter_bytes: int | None = None
    copy_floor_ms: float | None = None
    # The library reference against the math oracle, for the state this step's output was checked against.
    oracle_agreement: OracleAgreement | None = None
    # The last timed call of a forward/generate step against the same reference as the first call.
    steady_output: OutputCheck | None = None
    train: TrainStats | None = None
    repeat: RepeatStats | None = None
    serving: ServingRecord | None = None  # serve steps (bench/engine/serving)
    # Why an oracle could not verify this step's output ("math oracle: ..."); None when both ran or no output
    # was checked. A pass with this set is an unverified pass (docs/verdicts.md).
    unverified: str | None = None


@dataclass(frozen=True)
class Footprint:
    """Static memory of the loaded model."""

    param_bytes: int
    buffer_bytes: int
    memory_footprint_bytes: int  # model.get_memory_footprint()
    quant_state_bytes: int  # bitsandbytes quantisation state that get_memory_footprint leaves out
    adapter_bytes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerInfo:
    """The process that ran a case, and where the case came from. Every field is optional: each path that
    builds a CaseResult knows a different part (a worker that never started knows none, a dead one no
    traceback), and files written before this record was typed hold any subset of these keys.

    Field names are the JSON keys results files have always used; a key this version does not know is
    refused on reading, as in every other record. These are all the keys any version of peft-bench wrote,
    so an unknown one is a hand edit or a newer writer, and a newer writer's fact is not something this
    reader can interpret: keeping it silently would write it back unchecked."""

    # Written by the parent around the process (bench.runner.launch.run_one)
    pid: int | None = None
    returncode: int | None = None  # negative: killed by that signal
    timeout_s: float | None = None
    wall_s: float | None = None  # the parent's wall time of the whole worker process, its start included
    cpu_s: float | None = None  # the worker's own CPU time, from wait4
    log: str | None = None  # the worker's stdout and stderr
    compile_cache: str | None = None  # "warm" | "cold" (RunOptions.compile_cache)
    start_method: str | None = None  # "fork" | "spawn"
    fork_failed: str | None = None  # why the preloaded worker could not start (the case fell back to spawn)
    memory_limit_bytes: int | None = None  # RLIMIT_AS the worker ran under
    log_tail: tuple[str, ...] = ()  # the log's last lines, for error verdicts
    # Written by the worker itself (bench.worker.__main__)
    traceback_tail: tuple[str, ...] = ()  # an exception that escaped the case
    finished_at_epoch_s: float | None = None
    cpus: tuple[int, ...] | None = None  # the cores it could run on (its affinity; one job's under --jobs N)
    torch_threads: int | None = None  # torch's intra-op threads while the case ran
    # Written by merge (bench.results.shards): the merged file has one environment block, each case keeps its origin
    results_file: str | None = None
    hostname: str | None = None
    shard: str | None = None
    # The scheduler job that ran it (Results.scheduler's job_id: Slurm `123_1`): written by the run, so that a
    # case a --resume in another job kept names its own; merge fills it in from its file where it is None.
    job: str | None = None

    def merged(self, over: WorkerInfo) -> WorkerInfo:
        """This block with every fact `over` holds (not None, not empty) put in: the parent's facts over the
        ones the worker wrote into its own result file."""
        known = {f.name: getattr(over, f.name) for f in dataclasses.fields(over)}
        return dataclasses.replace(self, **{k: v for k, v in known.items() if v is not None and v != ()})


@dataclass(frozen=True)
class TimingPolicy:
    """The `[timing]` policy a case's timed calls followed (bench.spec.schema.Timing): `warmup` untimed
    calls, then rounds until both `min_rounds` and `min_time_s` are reached, at most `max_rounds`."""

    # Read as null where a results file holds {}: before this record was typed, {} meant "not recorded".
    EMPTY_IS_NONE: ClassVar[bool] = True

    warmup: int
    min_rounds: int
    min_time_s: float
    max_rounds: int


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    scenario: str
    scenario_file: str
    params: dict[str, str]
    verdict: Verdict
    reason: str  # one line: why it is not a pass (empty for pass)
    steps: tuple[StepRecord, ...] = ()
    phases_s: dict[str, float] = field(default_factory=dict)  # where the case's wall time went
    footprint: Footprint | None = None
    device: str = "cpu"
    total_recompiles: int | None = None
    total_graph_breaks: int | None = None
    scenario_outcomes: tuple[Outcome, ...] = ()
    worker: WorkerInfo = field(default_factory=WorkerInfo)
    timing_policy: TimingPolicy | None = None  # None: the case never reached its timed calls' setup
    harness: dict[str, Any] = field(
        default_factory=dict
    )  # the scenario's [harness] options the case ran with
    started_at: str = ""
    # The case's own wall time, measured inside its worker from the start of the case to its result (process
    # start not included). None where the worker reported none (a skip, an exception that escaped the case,
    # a dead worker, a case not run); the parent's time of the process is worker.wall_s, in every path.
    wall_s: float | None = None
    # The expanded case the worker was handed (bench.spec.cases.Case.to_dict): report, repro, merge and --resume
    # read it from here, so a results folder is self-contained. Empty in files written before it existed.
    case: dict[str, Any] = field(default_factory=dict)
    # Values that were NaN or infinite, written as null: {path in this record: "nan" | "inf" | "-inf"}
    # (bench.results.finite; the worker's file carries them here).
    non_finite: dict[str, str] = field(default_factory=dict)
    # The host facts the scenario's known failures name, as probed by the worker (bench.spec.host): a marker whose
    # facts did not all hold was dropped before any step was decided. Empty where none is named.
    host_facts: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Every path that builds a CaseResult passes a known verdict; an unknown one (a hand-edited results
        # file) is refused here rather than read as "not failing" by a gate.
        object.__setattr__(self, "verdict", Verdict(self.verdict))


@dataclass(frozen=True)
class Environment:
    python: str
    platform: str
    cpu: str
    cpu_count: int
    device: str
    gpu: str | None
    libraries: dict[str, str | None]
    suite_version: str
    git_commit: str | None
    hostname: str
    # torch intra-op threads (OMP_NUM_THREADS): timings with different counts are not comparable
    torch_threads: int | None = None


@dataclass(frozen=True)
class RunSettings:
    """The run's options that its verdicts and figures depend on (bench.runner.launch.RunOptions)."""

    require_oracles: bool = False
    timeout_s: float | None = None
    memory_limit_bytes: int | None = None
    device: str | None = None  # None: each worker's own choice (cuda when available)
    compile_cache: str = "warm"
    worker: str = ""  # fork | spawn
    trust_remote_code: bool = False
    allow_pickle: bool = False


@dataclass(frozen=True)
class Results:
    schema_version: int
    suite_version: str
    created_at: str
    environment: Environment
    scenario_set: tuple[str, ...]  # scenario names the run selected (for merge and compare)
    cases: tuple[CaseResult, ...]
    command: tuple[str, ...] = ()
    shard: str | None = None
    parent_cpu_s: float | None = None  # the parent's own CPU time while cases ran
    interrupted: bool = False
    non_finite: dict[str, str] = field(default_factory=dict)  # as CaseResult.non_finite, paths in the file
    # Cases run at a time (--jobs N), each pinned to its own cores (WorkerInfo.cpus); 1: one after another.
    jobs: int = 1
    # The verdict rules the cases were judged under (bench.VERDICT_RULES_VERSION); 1 in files from before it.
    verdict_rules: int = 1
    # The scheduler job this run was (bench.cli.ci.scheduler_from_env): {"kind": "slurm", "job_id": "123_1",
    # "array_job_id", "array_task_id", "shard_base", "shard_count", "script", "submit_dir", "node"}, or a
    # Kubernetes Indexed Job's or a GitHub Actions job's facts; {} outside a scheduler and in older files.
    scheduler: dict[str, str] = field(default_factory=dict)
    # The whole selection this run is part of (bench.spec.cases.selection_fingerprint): how many cases, and
    # the sha256 of their ids and specs; merge refuses shards whose selections differ. None / "" in older
    # files and in merged files.
    selection_cases: int | None = None
    selection_sha256: str = ""
    # The options its verdicts and figures depend on: --resume finishes the run with them. None in older files.
    options: RunSettings | None = None
