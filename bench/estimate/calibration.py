"""The calibration file: one JSON line per run, each case's features, measured wall and peak RSS and the
estimate made before it ran, keyed by machine. `run` appends to it; the estimate fits on its lines.

It lives in the cache root ($PEFT_BENCH_CACHE), next to the built models, because what it holds describes the
machine, not one run. A file that cannot be read is an input error naming it and its line; the next append
moves it aside (to *.corrupt-<time>) rather than overwrite what it held.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bench.errors import BenchInputError
from bench.estimate.features import CaseFeatures
from bench.estimate.model import DEFAULTS, Coefficients, Sample, calibrate, makespan_s
from bench.estimate.policy import CALIBRATION_FILE, CALIBRATION_FORMAT, MAX_RUNS_KEPT, MIN_CALIBRATION_CASES
from bench.results.atomic import write_text
from bench.results.environment import cpu_name
from bench.results.records import CaseResult, Results

MEASURED_VERDICTS = ("pass", "fail", "xfail", "xpass")  # a skip, an error or a case not run measured nothing


@dataclass(frozen=True)
class RunRecord:
    machine: Mapping[str, str | int]
    finished_at: str
    jobs: int
    cases: tuple[Sample, ...]
    estimate_total_s: float | None = None  # made before the run, for the cases it ran
    measured_total_s: float | None = None  # the run's own wall time; None for an interrupted run
    results: str = ""  # the results file it came from
    load_1min: float | None = None  # the machine's 1-minute load average when the run started
    slowdown: float = 1.0  # what that load made of each case's quiet time (bench.estimate.model.slowdown)


def calibration_path(cache_root: Path) -> Path:
    return Path(cache_root) / CALIBRATION_FILE


def this_machine(device: str) -> dict[str, str | int]:
    """What makes timings comparable between runs: the CPU model, its core count and where cases run."""
    return {"cpu": cpu_name(), "cores": os.cpu_count() or 0, "device": device}


def read_runs(path: Path) -> list[RunRecord]:
    """Every run in the file (all machines); [] where it does not exist. A BenchInputError names the file and
    line of anything unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchInputError(
            f"cannot read the estimate's calibration file: {exc}", source=str(path)
        ) from None
    runs = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            runs.append(_parse_line(line, path, n))
    return runs


def _parse_line(line: str, path: Path, n: int) -> RunRecord:
    where = {"source": str(path), "field": f"line {n}"}
    try:
        data = json.loads(line, parse_constant=_no_constant)
        if data.get("format") != CALIBRATION_FORMAT:
            raise BenchInputError(
                f"calibration format {data.get('format')!r}, this version reads {CALIBRATION_FORMAT}; "
                "remove the file to start a new one",
                **where,
            )
        cases = tuple(
            Sample(
                case_id=str(c["case_id"]),
                features={str(k): float(v) for k, v in c["features"].items()},
                weight_bytes=float(c["weight_bytes"]),
                wall_s=_seconds(c["wall_s"]),
                peak_rss_bytes=_opt_float(c.get("peak_rss_bytes")),
                jobs=int(data["jobs"]),
                estimate_wall_s=_opt_seconds(c.get("estimate_wall_s")),
                estimate_rss_bytes=_opt_float(c.get("estimate_rss_bytes")),
            )
            for c in data["cases"]
        )
        return RunRecord(
            machine=dict(data["machine"]),
            finished_at=str(data["finished_at"]),
            jobs=int(data["jobs"]),
            cases=cases,
            estimate_total_s=_opt_seconds(data.get("estimate_total_s")),
            measured_total_s=_opt_seconds(data.get("measured_total_s")),
            results=str(data.get("results", "")),
            load_1min=_opt_float(data.get("load_1min")),
            slowdown=float(data.get("slowdown", 1.0)),
        )
    except BenchInputError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BenchInputError(
            f"not a calibration record ({type(exc).__name__}: {exc}); remove the file to start a new one",
            **where,
        ) from None


def _opt_float(value) -> float | None:
    return None if value is None else float(value)


# A case's wall time above this is not a measurement (three years): 1e300 gave a 300-digit estimate.
MAX_WALL_S = 1e8


def _no_constant(name: str):
    """json's NaN, Infinity and -Infinity: this file never holds them (written with allow_nan=False), and one
    edited in stopped every later run in a traceback while the estimate printed its duration."""
    raise ValueError(f"{name} is not a number this file holds")


def _opt_seconds(value) -> float | None:
    return None if value is None else _seconds(value)


def _seconds(value) -> float:
    seconds = float(value)
    if not 0 <= seconds <= MAX_WALL_S:
        raise ValueError(f"{seconds:g} s is not a duration (0 to {MAX_WALL_S:g} s)")
    return seconds


def _line(run: RunRecord) -> str:
    return json.dumps(
        {
            "format": CALIBRATION_FORMAT,
            "machine": dict(run.machine),
            "finished_at": run.finished_at,
            "jobs": run.jobs,
            "results": run.results,
            "estimate_total_s": run.estimate_total_s,
            "measured_total_s": run.measured_total_s,
            "load_1min": run.load_1min,
            "slowdown": run.slowdown,
            "cases": [
                {
                    "case_id": s.case_id,
                    "features": dict(s.features),
                    "weight_bytes": s.weight_bytes,
                    "wall_s": s.wall_s,
                    "peak_rss_bytes": s.peak_rss_bytes,
                    "estimate_wall_s": s.estimate_wall_s,
                    "estimate_rss_bytes": s.estimate_rss_bytes,
                }
                for s in run.cases
            ],
        },
        sort_keys=True,
        allow_nan=False,
    )


def append_run(path: Path, run: RunRecord) -> str | None:
    """Add one run, keeping the newest MAX_RUNS_KEPT per machine. Returns a note when an unreadable file was
    moved aside first. Two runs finishing at once take turns (a lock file beside it).

    A run that measured no case (every case skipped, crashed or left for a later shard) is not added: it
    calibrates nothing, and its line would push out one of the runs that do (seen: a Slurm array's empty
    shards and crashed shards filled slots of a machine's file)."""
    if not run.cases:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    note = None
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            runs = read_runs(path)
        except BenchInputError as exc:
            stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
            aside = path.with_name(f"{path.name}.corrupt-{stamp}")
            os.replace(path, aside)
            note = f"{exc}; moved aside to {aside}, a new file started"
            runs = []
        runs = _trim([*runs, run], MAX_RUNS_KEPT)
        write_text(path, "".join(_line(r) + "\n" for r in runs))
    return note


def _trim(runs: list[RunRecord], keep: int) -> list[RunRecord]:
    seen: dict[str, int] = {}
    kept = []
    for r in reversed(runs):
        key = json.dumps(dict(r.machine), sort_keys=True)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= keep:
            kept.append(r)
    return kept[::-1]


def runs_on(runs: Sequence[RunRecord], machine: Mapping[str, str | int]) -> list[RunRecord]:
    return [r for r in runs if dict(r.machine) == dict(machine)]


def coefficients_from(
    runs: Sequence[RunRecord], jobs: int, defaults: Coefficients = DEFAULTS
) -> Coefficients:
    """Coefficients fitted to one machine's runs: those of the same --jobs where they hold enough cases (two
    jobs side by side slow each other a little), else all; the defaults below MIN_CALIBRATION_CASES. Each
    run's times are divided by the slowdown its machine's load gave it: the coefficients are quiet times.

    A run's wall time beyond its cases' (in the order its jobs ran them) is its start-up, up to the default,
    and beyond that the parent's time between cases (it saves the results after each one), which grows with
    the number of cases: it is spread over them, as part of each case's time."""
    same = [r for r in runs if r.jobs == jobs]
    chosen = same if sum(len(r.cases) for r in same) >= MIN_CALIBRATION_CASES else list(runs)
    if sum(len(r.cases) for r in chosen) < MIN_CALIBRATION_CASES:
        return defaults
    samples, overheads = [], []
    for r in chosen:
        gap_s = 0.0
        if r.measured_total_s is not None and r.cases:
            beyond_s = (r.measured_total_s - makespan_s([s.wall_s for s in r.cases], r.jobs)) / r.slowdown
            overheads.append(min(beyond_s, defaults.run_overhead_s))
            gap_s = max(beyond_s - defaults.run_overhead_s, 0.0) * r.jobs / len(r.cases)
        samples.extend(replace(s, wall_s=s.wall_s / r.slowdown + gap_s) for s in r.cases)
    return calibrate(samples, overheads, defaults)


def peak_rss_bytes(result: CaseResult) -> int | None:
    peaks = [
        s.memory.rss_peak_bytes for s in result.steps if s.memory and s.memory.rss_peak_bytes is not None
    ]
    return max(peaks) if peaks else None


def run_record(
    results: Results,
    features: Mapping[str, CaseFeatures],
    estimates: Mapping[str, tuple[float | None, float | None]],
    *,
    machine: Mapping[str, str | int],
    ran: Sequence[str],
    estimate_total_s: float | None,
    measured_total_s: float | None,
    results_path: str,
    load_1min: float | None = None,
    slowdown: float = 1.0,
) -> RunRecord:
    """The calibration line of a finished run: each case it ran (`ran`) that measured something, with a known
    size. `estimates` holds (wall s, peak RSS bytes) predicted before the run."""
    samples = []
    by_id = {c.case_id: c for c in results.cases}
    for case_id in ran:
        result, f = by_id.get(case_id), features.get(case_id)
        vector = f.vector() if f else None
        wall = result and (result.worker.wall_s or result.wall_s)
        if vector is None or not wall or result.verdict not in MEASURED_VERDICTS:
            continue
        predicted_wall, predicted_rss = estimates.get(case_id, (None, None))
        samples.append(
            Sample(
                case_id=case_id,
                features=vector,
                weight_bytes=f.weight_bytes,
                wall_s=wall,
                peak_rss_bytes=peak_rss_bytes(result),
                jobs=results.jobs,
                estimate_wall_s=predicted_wall,
                estimate_rss_bytes=predicted_rss,
            )
        )
    return RunRecord(
        machine=dict(machine),
        finished_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        jobs=results.jobs,
        cases=tuple(samples),
        estimate_total_s=None if results.interrupted else estimate_total_s,
        measured_total_s=None if results.interrupted else measured_total_s,
        results=results_path,
        load_1min=load_1min,
        slowdown=slowdown,
    )
