"""What a reader decides on, per model, precision and workload: one row per compile setting and way of
changing adapters (a hotswap path, a serving strategy, or no hotswap), with the figures that decide it.

Pure functions from Results to frozen records (bench.report.answers_view lays them out). A row pools the
cases of the run that share its key: latency is the median of every timed call of their measured steps with
the adapter active, with a 95 % bootstrap interval that resamples each step within itself
(bench.report.bootstrap); a row with any wrong output carries the flag (bench.report.flags), whatever else it
shows.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

from bench.judge.figures import is_hotswap, reload_step, switch_ms
from bench.report import flags
from bench.report.bootstrap import Interval, pooled_median, ratio_of_medians
from bench.report.case_facts import CaseFacts, case_facts, serve_step
from bench.report.memo import per_results
from bench.results.records import CaseResult, Results, StepRecord

# What the harness does not record yet; the report says so rather than leave the reader to wonder.
NOT_RECORDED = (
    "time to first token and inter-token latency are not recorded: the harness times whole generate() calls "
    "only (tokens/s here is batch x new tokens / median call)"
)


@dataclass(frozen=True)
class Key:
    model: str
    precision: str
    workload: str  # "forward 2x16", "generate 2x8 +8 tokens", "serve (closed, 32 requests)"
    compile: str
    way: str  # "hotswap (peft)", "serve: side_by_side", "no hotswap"

    @property
    def block(self) -> str:
        return f"{self.model} {self.precision} {self.workload}"


@dataclass(frozen=True)
class Choice:
    key: Key
    cases: tuple[str, ...]
    verdicts: tuple[str, ...]  # one per case, in case order
    latency: Interval | None  # ms per call (serve: per request, queueing included)
    latency_steps: int  # measured steps (serve: requests) pooled into it
    tokens_per_s: float | None
    overhead: Interval | None  # adapter active / adapter disabled, same case, medians
    overhead_case: str  # the case it was measured in; empty when none has a disabled measured step
    switch_ms: float | None  # median over the swaps of swap call + first call after it (serve: per switch)
    switch_n: int
    switch_over_floor: float | None  # swap call / plain tensor copy of the adapter's bytes, median
    switch_over_reload: float | None  # switch_ms / a plain load into the same model + its first call
    reload_from: str  # the case whose reload it is set against
    recompiles_per_swap: float | None  # median (serve: recompiles after warm-up, in all)
    rss_peak_bytes: int | None  # median of the cases' peaks
    wrong: str  # the first wrong-output flag of the row's steps; empty when every checked output matched
    failures: tuple[str, ...]  # "case: kind; known failure: reason [fingerprint]" for each case not passing
    bad_scenarios: tuple[str, ...] = ()  # scenarios of the cases with a wrong output or a raise
    bad_cases: int = 0  # how many of the row's cases had a wrong output or raised (CaseFacts.bad)
    bad_kinds: tuple[str, ...] = ()  # CaseFacts.bad_kind of those cases other than a wrong output, each once
    unchecked_cases: int = 0  # cases none of whose outputs was checked against a reference
    unverified_cases: int = 0  # unverified passes: one oracle's word (StepRecord.unverified)
    calls: int = 0  # timed calls (serve: requests) the latency pools, also where too few for an interval


def _scenario(case: CaseResult) -> dict:
    return case.case.get("scenario", {}) if isinstance(case.case, dict) else {}


def model_of(case: CaseResult) -> str:
    """The scenario's model; results written before cases were recorded whole do not name it."""
    return str(_scenario(case).get("model", "model not recorded")).removeprefix("builtin:")


def workload_of(case: CaseResult) -> str:
    serve = serve_step(case)
    if serve is not None:
        return f"serve ({serve.serving.arrival}, {serve.serving.figures.requests} requests)"
    w = _scenario(case).get("workload", {})
    kind = w.get("kind", "forward")
    shape = f" {w['batch_size']}x{w['seq_len']}" if "batch_size" in w and "seq_len" in w else ""
    return f"{kind}{shape}" + (f" +{w.get('new_tokens')} tokens" if kind == "generate" else "")


def key_of(case: CaseResult) -> Key:
    serve = serve_step(case)
    if serve is not None:
        sv = serve.serving
        way = "serve: " + sv.strategy + (f" ({sv.hotswap_path})" if sv.hotswap_path else "")
    elif any(is_hotswap(s) or (s.repeat is not None and s.repeat.mode == "hotswap") for s in case.steps):
        way = f"hotswap ({case.params.get('hotswap_path', '?')})"
    else:
        way = "no hotswap"
    return Key(
        model_of(case),
        case.params.get("precision", "?"),
        workload_of(case),
        case.params.get("compile", "?"),
        way,
    )


def _overhead(members: list[tuple[CaseResult, CaseFacts]]) -> tuple[Interval | None, str]:
    for c, f in members:
        if f.active and f.base and not f.wrong:
            iv = ratio_of_medians(f.active[-1].timing.samples_ms, f.base[-1].timing.samples_ms)
            if iv is not None:
                return iv, c.case_id
    return None, ""


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


@per_results
def case_keys(results: Results) -> dict[str, Key]:
    """Each case's key, by case id, worked out once per run: the answers' grouping, the reload pool and the
    switch table's reloads each read every case's key (key_of walks the case's steps: 80,000 calls were
    a quarter of a 20,000-case report's rendering)."""
    return {c.case_id: key_of(c) for c in results.cases}


@per_results
def reload_steps(results: Results) -> list[StepRecord | None]:
    """bench.judge.figures.reload_step of each case, in the order of results.cases: the reload pool and the
    switch table both read it."""
    return [reload_step(c) for c in results.cases]


@per_results
def reload_pool(results: Results) -> dict[tuple[str, str, str, str], tuple[str, float]]:
    """(model, precision, workload, compile) -> (case id, plain load + first call, ms) of the first case with a
    plain load into the model its swaps would run on (bench.judge.figures.reload_step): the reload a swap of
    another case of the same model and setting avoids."""
    out: dict[tuple[str, str, str, str], tuple[str, float]] = {}
    keys = case_keys(results)
    for c, step in zip(results.cases, reload_steps(results), strict=True):
        k = keys[c.case_id]
        total = switch_ms(step) if step is not None else None
        if total is not None:
            out.setdefault((k.model, k.precision, k.workload, k.compile), (c.case_id, total))
    return out


def _choice(key: Key, members: list[tuple[CaseResult, CaseFacts]], reloads: dict) -> Choice:
    """One row: the cases of one key, pooled."""
    cases = [c for c, _ in members]
    serve = [f.serve for _, f in members if f.serve is not None]
    wrong = next((f.wrong for _, f in members if f.wrong), "")
    bad = [c for c, f in members if f.bad]
    if wrong and len(bad) < len(cases):
        # Only some cases: say which, so a scenario-specific bug does not read as the whole way's.
        wrong = f"{flags.WRONG} in {len(bad)} of {len(cases)} cases" + wrong.removeprefix(flags.WRONG)
    peaks = [f.rss_peak_bytes for _, f in members if f.rss_peak_bytes is not None]
    failures = tuple(
        f"{c.case_id}: {f.failure.kind}"
        + (f"; known failure: {f.failure.known_failure}" if f.failure.known_failure else "")
        for c, f in members
        if c.verdict != "pass"
    )
    common = {
        "key": key,
        "cases": tuple(c.case_id for c in cases),
        "verdicts": tuple(str(c.verdict) for c in cases),
        "rss_peak_bytes": int(statistics.median(peaks)) if peaks else None,
        "wrong": wrong,
        "failures": failures,
        "bad_scenarios": tuple(dict.fromkeys(c.scenario for c in bad)),
        "bad_cases": len(bad),
        "bad_kinds": tuple(dict.fromkeys(k for _, f in members if (k := f.bad_kind) and k != flags.WRONG)),
        "unchecked_cases": sum(1 for _, f in members if not f.checked),
        "unverified_cases": sum(1 for _, f in members if f.unverified),
    }
    if serve:
        figs = [s.serving.figures for s in serve]
        switches = sum(f.switches for f in figs)
        per_switch = sum(f.switch_ms_total for f in figs) / switches if switches else None
        return Choice(
            **common,
            latency=pooled_median([[q.latency_ms for q in s.serving.requests] for s in serve]),
            latency_steps=sum(f.requests for f in figs),
            calls=sum(len(s.serving.requests) for s in serve),
            tokens_per_s=_median([f.tokens_per_s for f in figs if f.tokens_per_s is not None]),
            overhead=None,
            overhead_case="",
            switch_ms=per_switch,
            switch_n=switches,
            switch_over_floor=None,
            switch_over_reload=None,
            reload_from="",
            recompiles_per_swap=float(sum(f.recompiles_after_warmup for f in figs)),
        )
    active = [s for _, f in members for s in f.active]
    latency = pooled_median([s.timing.samples_ms for s in active])
    tokens = None
    w = _scenario(cases[0]).get("workload", {})
    if latency is not None and w.get("kind") == "generate" and latency.estimate > 0:  # 0 ms: no rate
        tokens = w.get("batch_size", 1) * w.get("new_tokens", 0) / (latency.estimate / 1000.0)
    overhead, overhead_case = _overhead(members)
    swaps = [s for _, f in members for s in f.swaps]
    # The switch figures are of the swaps whose output matched, all three alike (a median of a wrong and a
    # right swap set against the right one's reload ratio read as one claim); of every swap, flagged
    # wrong, only where none matched.
    correct = [s for s in swaps if not flags.wrong_output(s)]
    counted = correct or swaps
    reload_case, reload_total = reloads.get((key.model, key.precision, key.workload, key.compile), ("", None))
    correct_switch = _median([switch_ms(s) for s in correct])
    return Choice(
        **common,
        latency=latency,
        latency_steps=len(active),
        calls=sum(s.timing.n for s in active),
        tokens_per_s=tokens,
        overhead=overhead,
        overhead_case=overhead_case,
        switch_ms=_median([switch_ms(s) for s in counted]),
        switch_n=len(counted),
        switch_over_floor=_median([s.op_time_ms / s.copy_floor_ms for s in counted if s.copy_floor_ms]),
        # A wrong swap is never a speed-up: the ratio counts the swaps whose output matched, only.
        switch_over_reload=(correct_switch / reload_total) if correct_switch and reload_total else None,
        reload_from=reload_case if correct_switch and reload_total else "",
        recompiles_per_swap=_median([float(s.compile.recompiles) for s in swaps if s.compile is not None]),
    )


@per_results
def choices(results: Results) -> list[Choice]:
    """Every key of the run, in the order a reader scans them: by model, precision and workload, then compile
    setting and way. Cases that measured nothing a reader decides on (no timed call, no swap, no serve) are
    left to the detailed sections."""
    groups: dict[Key, list[tuple[CaseResult, CaseFacts]]] = {}
    keys = case_keys(results)
    for c, f in zip(results.cases, case_facts(results), strict=True):
        if c.verdict in ("skip", "not_run"):
            continue
        if not (f.active or f.swaps or f.serve):
            continue
        groups.setdefault(keys[c.case_id], []).append((c, f))
    reloads = reload_pool(results)
    rows = _serve_reloads([_choice(k, cs, reloads) for k, cs in groups.items()])
    return sorted(rows, key=lambda r: (r.key.block, r.key.compile, r.key.way))


def _serve_reloads(rows: list[Choice]) -> list[Choice]:
    """A serving strategy's cost per switch against the reload strategy's, same stream and setting."""
    reload = {
        (r.key.block, r.key.compile): r
        for r in rows
        if r.key.way == "serve: reload" and r.switch_ms and not r.wrong
    }
    out = []
    for r in rows:
        base = reload.get((r.key.block, r.key.compile))
        if r.key.way.startswith("serve: ") and base is not None and r.switch_ms is not None and not r.wrong:
            r = replace(r, switch_over_reload=r.switch_ms / base.switch_ms, reload_from=base.cases[0])
        out.append(r)
    return out


def usable(c: Choice) -> bool:
    """A choice a reader may take as it is: every case's output was checked and matched, the references
    agreed with the math where it ran, and no case raised or errored."""
    return c.bad_cases == 0 and not c.wrong and c.unchecked_cases == 0


def unchecked_only(c: Choice) -> bool:
    """Nothing wrong seen, but some case's output was never checked: not a choice to take as it is."""
    return c.bad_cases == 0 and not c.wrong and c.unchecked_cases > 0


def partly_usable(c: Choice) -> bool:
    """Right in some of its cases: usable where the failing scenarios' conditions do not hold."""
    return 0 < c.bad_cases < len(c.cases)


@dataclass(frozen=True)
class Advice:
    block: str
    fastest: Choice | None  # the usable choice with the lowest latency median
    tied: tuple[Choice, ...]  # usable choices whose interval overlaps the fastest's
    switch: Choice | None  # the way to change adapters with the lowest switch cost (usable, else partly)
    avoid: tuple[Choice, ...]  # wrong or raising in every case
    careful: tuple[Choice, ...]  # wrong or raising in some cases
    unchecked: tuple[Choice, ...] = ()  # nothing wrong seen, but some case's output never checked


def advice(rows: list[Choice]) -> list[Advice]:
    """Per block: the fastest usable choice (lowest latency median) and those tied with it (95 % intervals
    overlap); the cheapest way to switch adapters; the choices to avoid, and those right only in some cases."""
    blocks: dict[str, list[Choice]] = {}
    for r in rows:
        blocks.setdefault(r.key.block, []).append(r)
    out = []
    for block, rs in blocks.items():
        ok = sorted((r for r in rs if usable(r) and r.latency), key=lambda r: r.latency.estimate)
        fastest = ok[0] if ok else None
        tied = tuple(r for r in ok[1:] if fastest and r.latency.low <= fastest.latency.high)
        swaps = [r for r in rs if r.switch_ms is not None]
        # Right everywhere first; else the way wrong in the smallest share of its cases, then the cheapest.
        switch = min(
            [r for r in swaps if usable(r)] or [r for r in swaps if partly_usable(r)],
            key=lambda r: (r.bad_cases / len(r.cases), r.switch_ms),
            default=None,
        )
        avoid = tuple(r for r in rs if not usable(r) and not partly_usable(r) and not unchecked_only(r))
        careful = tuple(r for r in rs if partly_usable(r))
        out.append(Advice(block, fastest, tied, switch, avoid, careful, tuple(filter(unchecked_only, rs))))
    return out


def with_run_reloads(results: Results, rows: list) -> list:
    """Switch-table rows (bench.report.data.SwitchRow) whose case has no plain load into the model its swaps
    ran on, set against the first such load of another case of the same model, precision, workload and
    compile setting in this run (reload_pool); the note names that case. A wrong or raising swap gets none."""
    pool = reload_pool(results)
    keys = case_keys(results)
    out = []
    for r in rows:
        k = keys.get(r.case_id)
        found = pool.get((k.model, k.precision, k.workload, k.compile)) if k else None
        fillable = r.over_reload is None and r.total_ms is not None and r.kind != "reload"
        if fillable and found and not r.note.startswith(("raised", flags.WRONG)):
            case_id, total = found
            note = f"x reload against {case_id}'s plain load (same model, precision, workload and compile)"
            r = replace(r, over_reload=r.total_ms / total, note=note)
        out.append(r)
    return out
