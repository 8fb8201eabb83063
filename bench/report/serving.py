"""The report's serving section: strategy against strategy (one row per serve case), and one figure with the
latency CDF, the timeline of switches and recompiles, and memory over the stream."""

from __future__ import annotations

from dataclasses import dataclass

from bench.report.figure import WRONG_COLOUR, Plot, colours, new_figure, save
from bench.report.flags import WRONG
from bench.report.memo import per_results
from bench.report.sections import Section, _ms, _table
from bench.results.records import Results
from bench.results.serving_records import RequestRecord, ServingFigures

MiB = 2**20


@dataclass(frozen=True)
class ServingRow:
    case_id: str
    scenario: str
    strategy: str  # with the hotswap path when it has one
    compile: str
    verdict: str
    figures: ServingFigures
    requests: tuple[RequestRecord, ...]
    serve_s: float | None = None
    check_s: float | None = None


@per_results
def serving_rows(results: Results) -> list[ServingRow]:
    rows = []
    for c in results.cases:
        for s in c.steps:
            sv = s.serving
            if sv is None or sv.figures is None:
                continue
            label = sv.strategy + (f" ({sv.hotswap_path})" if sv.hotswap_path else "")
            rows.append(
                ServingRow(
                    c.case_id,
                    c.scenario,
                    label,
                    c.params.get("compile", ""),
                    c.verdict,
                    sv.figures,
                    sv.requests,
                    sv.serve_s,
                    sv.check_s,
                )
            )
    return rows


def _num(v: float | None, fmt: str = ".3g") -> str:
    return "-" if v is None else format(v, fmt)


def _wrong_cell(f: ServingFigures) -> str:
    text = f"{f.wrong_responses} / {f.checked_responses}"
    return f"{WRONG}: {text}" if f.wrong_responses else text


def section(results: Results) -> Section:
    rows = serving_rows(results)
    table = _table(
        [
            "case",
            "strategy",
            "wrong / checked",
            "verdict",
            "n",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "warm p50 / p99 ms",
            "req/s",
            "tok/s",
            "switches",
            "switch ms",
            "recompiles (after warm-up)",
            "RSS peak MiB",
            "RSS growth KiB/req",
            "check / serve + setup s",
            "compile",
        ],
        [
            [r.case_id, r.strategy, _wrong_cell(f), r.verdict, f.requests]
            + [_ms(f.latency_ms_p50), _ms(f.latency_ms_p90)]
            + [_ms(f.latency_ms_p99), _ms(f.latency_ms_max)]
            + [f"{_ms(f.warm_latency_ms_p50)} / {_ms(f.warm_latency_ms_p99)}"]
            + [_num(f.throughput_rps), _num(f.tokens_per_s)]
            + [
                f.switches,
                _num(f.switch_ms_total, ".0f"),
                f"{f.recompiles_total} ({f.recompiles_after_warmup})",
            ]
            + ["-" if f.rss_peak_bytes is None else f"{f.rss_peak_bytes / MiB:.0f}"]
            + [
                _num(
                    None if f.rss_growth_bytes_per_request is None else f.rss_growth_bytes_per_request / 1024
                )
            ]
            + [f"{_num(r.check_s)} / {_num(r.serve_s)} + {_num(f.setup_ms / 1000)}"]
            + [r.compile]
            for r in rows
            for f in (r.figures,)
        ],
    )
    return Section(
        "serving",
        "Serving replay",
        "One row per strategy: the same seeded request stream, served by one process each. Latency is queueing "
        "+ switch + model call per request (virtual time over measured service times; n = requests). Every "
        "checked response is compared with a fresh eager reference of its adapter; a wrong one fails the case "
        "and is listed with its request id; check / serve + setup s: wall seconds checking them (the fresh "
        "reference's loads included) vs serving the stream, + the strategy's setup before its first request "
        "(side_by_side and mixed_batch load every adapter there; hotswap and reload load during the stream). "
        "Timings compare only within one run.",
        (table,) if rows else (),
        empty="No serve step in this run.",
    )


def _label(r: ServingRow) -> str:
    f = r.figures
    wrong = f" {WRONG} {f.wrong_responses}/{f.checked_responses}" if f.wrong_responses else ""
    return f"{r.strategy} (n={f.requests}){wrong}"


def serving_plot(rows: list[ServingRow]) -> Plot | None:
    """Three panels: latency CDF per strategy; latency over the stream with switches and recompiles marked;
    RSS after each request."""
    if not rows:
        return None
    plt, fig, (cdf, timeline, memory) = new_figure(12, 12, rows=3)
    palette = colours([r.case_id for r in rows])
    for r in rows:
        colour = palette[r.case_id]
        lat = sorted(q.latency_ms for q in r.requests)
        n = len(lat)
        bad = bool(r.figures.wrong_responses)
        cdf.step(
            lat,
            [(i + 1) / n for i in range(n)],
            where="post",
            color=colour,
            ls="--" if bad else "-",
            lw=2 if bad else 1.2,
            label=_label(r),
        )
        ordered = sorted(r.requests, key=lambda q: q.id)
        timeline.plot([q.id for q in ordered], [q.latency_ms for q in ordered], color=colour, lw=1)
        switched = [q for q in ordered if q.switched]
        timeline.scatter(
            [q.id for q in switched], [q.latency_ms for q in switched], marker="|", color=colour, s=30
        )
        recompiled = [q for q in ordered if q.recompiles]
        timeline.scatter(
            [q.id for q in recompiled], [q.latency_ms for q in recompiled], marker="x", color=colour, s=40
        )
        wrong = [q for q in ordered if q.matches is False]
        timeline.scatter(
            [q.id for q in wrong],
            [q.latency_ms for q in wrong],
            marker="o",
            facecolors="none",
            color=WRONG_COLOUR,
            s=50,
        )
        rss = [(q.id, q.rss_after_bytes / MiB) for q in ordered if q.rss_after_bytes is not None]
        if rss:
            memory.plot(*zip(*rss, strict=True), color=colour, lw=1, label=_label(r))
    cdf.set_xscale("log")
    cdf.set_xlabel("request latency, ms (log)")
    cdf.set_ylabel("fraction of requests")
    cdf.set_title("Latency CDF per strategy", fontsize=10)
    cdf.grid(alpha=0.3)
    cdf.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    timeline.set_yscale("log")
    timeline.set_xlabel("request id")
    timeline.set_ylabel("latency, ms (log)")
    timeline.set_title("Over the stream: | a switch, x a recompile, red o a wrong response", fontsize=10)
    from matplotlib.lines import Line2D

    timeline.legend(
        handles=[
            Line2D([], [], color="grey", marker="|", ls="", ms=10, label="adapter switch"),
            Line2D([], [], color="grey", marker="x", ls="", ms=8, label="recompile"),
            Line2D(
                [], [], color=WRONG_COLOUR, marker="o", mfc="none", ls="", ms=8, label=f"{WRONG} response"
            ),
        ],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    timeline.grid(alpha=0.3)
    memory.set_xlabel("request id")
    memory.set_ylabel("process RSS after the request, MiB")
    memory.set_title("Memory over the stream (one reading per model call)", fontsize=10)
    memory.grid(alpha=0.3)
    memory.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save(plt, fig)
