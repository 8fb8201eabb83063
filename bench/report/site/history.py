"""What a history of runs says, as plain data: what changed between runs, each case's verdicts across them,
where a verdict moved, and the trend of each case's key figures. Pure functions of the runs; the pages
(bench.report.site.pages) only lay them out.

Verdicts judged under different verdict rules (bench.VERDICT_RULES_VERSION) are not compared: a change of
verdict across a change of rules is listed as such, never as a regression or a fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import VERDICT_RULES_VERSION
from bench.results.environment import LIBRARIES
from bench.results.flat_rows import ROW_FIELDS, row_lists
from bench.results.records import Environment, Results
from bench.results.runs import Run

# The figures a trend is drawn for, with their unit: policy as data. Per step unless the metric is the
# case's own (total_recompiles).
TREND_METRICS: dict[str, str] = {
    "latency_ms_median": "ms",
    "first_call_ms": "ms",
    "recompiles": "count",
    "total_recompiles": "count",
    "rss_peak_bytes": "bytes",
}
# Environment fields compared between consecutive runs, in the order they are listed.
_ENV_FIELDS = (
    "device",
    "gpu",
    "cpu",
    "cpu_count",
    "torch_threads",
    "python",
    "platform",
    "suite_version",
    "git_commit",
)


@dataclass(frozen=True)
class Column:
    """One run as a column of the history."""

    run: Run
    label: str  # the library pair: "transformers 5.23.0 / peft 0.21.2"
    changes: tuple[str, ...]  # what differs from the previous run ("peft 0.21.2 -> 0.20.0"); () for the first
    rules: int  # the verdict rules its cases were judged under

    @property
    def stale(self) -> bool:
        return self.rules < VERDICT_RULES_VERSION


@dataclass(frozen=True)
class VerdictChange:
    case_id: str
    before: Column
    after: Column
    was: str
    now: str

    @property
    def comparable(self) -> bool:
        return self.before.rules == self.after.rules


@dataclass(frozen=True)
class Trend:
    case_id: str
    metric: str
    unit: str
    series: dict[str, tuple[float | None, ...]]  # "step 4 forward" (or "case") -> one value per column


def library_pair(results: Results) -> str:
    libs = results.environment.libraries
    return f"transformers {libs.get('transformers') or '-'} / peft {libs.get('peft') or '-'}"


def environment_changes(before: Results, after: Results, *, with_hostname: bool = False) -> tuple[str, ...]:
    """What differs between two runs' environments and run settings, one "name old -> new" each."""
    a, b = before.environment, after.environment
    out = []
    names = [n for n in LIBRARIES if n in a.libraries or n in b.libraries]
    names += sorted((set(a.libraries) | set(b.libraries)) - set(names))
    out += [_change(n, a.libraries.get(n), b.libraries.get(n)) for n in names]
    fields = (*_ENV_FIELDS, "hostname") if with_hostname else _ENV_FIELDS
    out += [_change(f, getattr(a, f), getattr(b, f)) for f in fields]
    out.append(_change("jobs", before.jobs, after.jobs))
    out.append(_change("verdict rules", before.verdict_rules, after.verdict_rules))
    return tuple(c for c in out if c)


def _change(name: str, old: object, new: object) -> str:
    if old == new:
        return ""
    return f"{name} {'-' if old is None else old} -> {'-' if new is None else new}"


def columns(runs: list[Run], *, with_hostname: bool = False) -> list[Column]:
    out = []
    for i, run in enumerate(runs):
        prev = runs[i - 1].results if i else None
        changes = environment_changes(prev, run.results, with_hostname=with_hostname) if prev else ()
        out.append(Column(run, library_pair(run.results), changes, run.results.verdict_rules))
    return out


def case_ids(cols: list[Column]) -> list[str]:
    return sorted({c.case_id for col in cols for c in col.run.results.cases})


def verdict_matrix(cols: list[Column]) -> dict[str, tuple[str | None, ...]]:
    """case id -> its verdict in each column (None where that run did not have the case)."""
    per_run = [{c.case_id: str(c.verdict) for c in col.run.results.cases} for col in cols]
    return {cid: tuple(v.get(cid) for v in per_run) for cid in case_ids(cols)}


def verdict_changes(cols: list[Column]) -> list[VerdictChange]:
    """Each case's verdict against its verdict in the latest earlier run that had it, where it differs."""
    out = []
    for cid, verdicts in verdict_matrix(cols).items():
        last: int | None = None
        for i, v in enumerate(verdicts):
            if v is None:
                continue
            if last is not None and verdicts[last] != v:
                out.append(VerdictChange(cid, cols[last], cols[i], verdicts[last], v))
            last = i
    return out


# Where a flat row holds what a trend reads (ROW_FIELDS' order).
_TREND_AT = tuple(ROW_FIELDS.index(f) for f in ("case_id", "step", "op", "metric", "value"))


def trends(cols: list[Column], metrics: dict[str, str] = TREND_METRICS) -> list[Trend]:
    """Each case's TREND_METRICS per step across the columns: only series with at least one value."""
    values: dict[tuple[str, str], dict[str, dict[int, float]]] = {}
    order: dict[tuple[str, str], dict[str, int]] = {}
    for i, col in enumerate(cols):
        # Only the trend metrics' rows are made (row_lists' filter), as lists read by position.
        for row in row_lists(col.run.results, metrics):
            case_id, step, op, metric, value = (row[k] for k in _TREND_AT)
            key = (case_id, metric)
            label = "case" if step is None else f"step {step} {op}"
            values.setdefault(key, {}).setdefault(label, {})[i] = float(value)
            order.setdefault(key, {}).setdefault(label, -1 if step is None else step)
    out = []
    for (cid, metric), by_label in sorted(values.items()):
        labels = sorted(by_label, key=lambda lb: order[(cid, metric)][lb])
        series = {lb: tuple(by_label[lb].get(i) for i in range(len(cols))) for lb in labels}
        out.append(Trend(cid, metric, metrics[metric], series))
    return out


def moved(trend: Trend) -> float:
    """How far a trend's figures moved: the largest |last / first - 1| over its series, between the first and
    the last run holding a value (0 for a series with fewer than two, or a first value of 0)."""
    out = 0.0
    for values in trend.series.values():
        held = [v for v in values if v is not None]
        if len(held) >= 2 and held[0]:
            out = max(out, abs(held[-1] / held[0] - 1.0))
    return out


def drawn_cases(trends_: list[Trend], limit: int) -> list[str]:
    """The cases a trends page draws, at most `limit`: those whose figures moved most across the runs first
    (`moved`, their largest over the metrics), ties in case order."""
    by_case: dict[str, float] = {}
    for t in trends_:
        by_case[t.case_id] = max(by_case.get(t.case_id, 0.0), moved(t))
    return sorted(by_case, key=lambda cid: (-by_case[cid], cid))[:limit]


def host_facts(env: Environment, *, with_hostname: bool = False) -> str:
    """The machine in one line, for a run's row."""
    where = env.gpu or env.cpu
    threads = f", {env.torch_threads} torch threads" if env.torch_threads else ""
    host = f", host {env.hostname}" if with_hostname and env.hostname else ""
    return f"{env.device}: {where} ({env.cpu_count} cores{threads}){host}"
