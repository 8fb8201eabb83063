"""A selection's estimate: each case's predicted wall time and peak RSS, the run's total on --jobs N, the
calibration it came from and how far off the last run's estimate was; and the run's line appended after it."""

from __future__ import annotations

import datetime as _dt
import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchInputError
from bench.estimate.calibration import (
    RunRecord,
    append_run,
    calibration_path,
    coefficients_from,
    read_runs,
    run_record,
    runs_on,
    this_machine,
)
from bench.estimate.features import CaseFeatures, case_features
from bench.estimate.model import (
    Coefficients,
    makespan_s,
    own_tail,
    predict_rss_bytes,
    predict_wall_s,
    slowdown,
)
from bench.estimate.params import layer_count, parameter_count
from bench.results.records import Results
from bench.spec.cases import Case
from bench.spec.precision import QUANTIZED


@dataclass(frozen=True)
class CaseEstimate:
    features: CaseFeatures
    wall_s: float | None  # None: the model's size is unknown
    peak_rss_bytes: float | None


@dataclass(frozen=True)
class Estimate:
    cases: tuple[CaseEstimate, ...]
    jobs: int
    total_wall_s: float  # the run on `jobs` jobs, cases of unknown size left out
    coefficients: Coefficients
    last_run: RunRecord | None = None  # this machine's previous run with an estimate to compare
    calibration_file: str = ""
    problem: str | None = None  # why the calibration file could not be used (the defaults were)
    load_1min: float | None = None  # the machine's 1-minute load average when estimated
    cores: int = 0
    slowdown: float = 1.0  # the load's factor, already in every wall time above
    own_load: float = 0.0  # of load_1min, what this machine's last run left (not other work)

    @property
    def unknown(self) -> tuple[str, ...]:
        return tuple(c.features.case_id for c in self.cases if c.wall_s is None)

    @property
    def peak_rss_bytes(self) -> float | None:
        known = [c.peak_rss_bytes for c in self.cases if c.peak_rss_bytes is not None]
        return max(known) if known else None


def estimate_cases(
    cases: Sequence[Case],
    coefficients: Coefficients,
    jobs: int,
    params_of: Callable[[str], int | None],
    skipped: Callable[[str], bool] = lambda precision: False,
    factor: float = 1.0,
    layers_of: Callable[[str], int | None] = lambda model: None,
) -> tuple[tuple[CaseEstimate, ...], float]:
    """Pure: each case's estimate, and the run's wall time on `jobs` jobs (cases of unknown size left out),
    wall times multiplied by `factor` (the machine's load)."""
    sizes: dict[str, tuple[int | None, int | None]] = {}
    out = []
    for case in cases:
        model = case.scenario.model
        if model not in sizes:
            sizes[model] = params_of(model), layers_of(model)
        params, layers = sizes[model]
        f = case_features(case, params, skipped=skipped(case.precision), layers=layers)
        wall = predict_wall_s(f.vector(), coefficients)
        out.append(
            CaseEstimate(
                f, None if wall is None else wall * factor, predict_rss_bytes(f.weight_bytes, coefficients)
            )
        )
    walls = [c.wall_s for c in out if c.wall_s is not None]
    return tuple(out), factor * coefficients.run_overhead_s + makespan_s(walls, jobs)


def precision_skipped(device: str) -> Callable[[str], bool]:
    """The parent never imports bitsandbytes (it imports torch): only "not installed" is known here."""
    missing = importlib.util.find_spec("bitsandbytes") is None
    return lambda precision: precision in QUANTIZED and missing


def estimate(cases: Sequence[Case], cache_root: Path, device: str, jobs: int, *, strict: bool) -> Estimate:
    """The selection's estimate on this machine. An unreadable calibration file raises (strict: `list
    --estimate`) or leaves the defaults with the problem noted (a run goes on)."""
    path = calibration_path(cache_root)
    problem = None
    try:
        runs = runs_on(read_runs(path), this_machine(device))
    except BenchInputError as exc:
        if strict:
            raise
        runs, problem = [], str(exc)
    coefficients = coefficients_from(runs, jobs)
    load, cores = os.getloadavg()[0], len(os.sched_getaffinity(0))
    own = min(last_run_tail(runs, cores, _dt.datetime.now(_dt.UTC)), load)
    factor = slowdown(load - own, jobs, cores)
    rows, total = estimate_cases(
        cases, coefficients, jobs, parameter_count, precision_skipped(device), factor, layer_count
    )
    compared = [r for r in runs if r.estimate_total_s is not None and r.measured_total_s]
    last = compared[-1] if compared else None
    return Estimate(rows, jobs, total, coefficients, last, str(path), problem, load, cores, factor, own)


def last_run_tail(runs: Sequence[RunRecord], cores: int, now: _dt.datetime) -> float:
    """What the newest recorded run on this machine still holds of the 1-minute load average at `now`
    (model.own_tail): a run of peft-bench keeps every core busy (one torch thread per job, or every core's
    thread with one job). 0 without a run or where its end cannot be read."""
    if not runs:
        return 0.0
    run = runs[-1]  # the file keeps the order runs were appended in
    try:
        ended = _dt.datetime.fromisoformat(run.finished_at)
        ago_s = (now - ended).total_seconds()
    except (TypeError, ValueError):  # an end without a time zone, or not a time
        return 0.0
    return own_tail(cores, run.measured_total_s, ago_s)


def over_budget(est: Estimate, max_minutes: float | None) -> str | None:
    """Why a selection is refused under --max-minutes, or None. Cases of unknown size count as nothing: the
    known ones alone over the budget refuse it."""
    if max_minutes is None or est.total_wall_s <= max_minutes * 60:
        return None
    unknown = f" (and {len(est.unknown)} case(s) of unknown size)" if est.unknown else ""
    return (
        f"--max-minutes {max_minutes:g}: the selection is estimated at {est.total_wall_s / 60:.1f} min"
        f"{unknown} on {est.jobs} job(s), over the budget; select fewer cases (-k, --tag, --shard), "
        "raise --jobs, or raise --max-minutes"
    )


def uncounted_under_budget(est: Estimate, max_minutes: float | None) -> str | None:
    """What a --max-minutes that let the selection through did not count, or None: cases of unknown size are
    not in the total, so a pass says the budget held for the rest only."""
    if max_minutes is None or not est.unknown or over_budget(est, max_minutes):
        return None
    return (
        f"--max-minutes {max_minutes:g} held for the cases of known size ({est.total_wall_s / 60:.1f} min); "
        f"{len(est.unknown)} case(s) of unknown size (e.g. {est.unknown[0]}) are not counted and may run past it"
    )


def record_run(
    est: Estimate,
    results: Results,
    *,
    cache_root: Path,
    device: str,
    ran: Sequence[str],
    measured_total_s: float,
    results_path: str,
) -> str | None:
    """Append the finished run to the calibration file; returns a note where an unreadable file was moved aside."""
    features = {c.features.case_id: c.features for c in est.cases}
    predicted = {c.features.case_id: (c.wall_s, c.peak_rss_bytes) for c in est.cases}
    record = run_record(
        results,
        features,
        predicted,
        machine=this_machine(device),
        ran=ran,
        estimate_total_s=None if est.unknown else est.total_wall_s,
        measured_total_s=measured_total_s,
        results_path=results_path,
        load_1min=est.load_1min,
        slowdown=est.slowdown,
    )
    return append_run(calibration_path(cache_root), record)
