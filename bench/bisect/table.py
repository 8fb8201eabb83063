"""The search as one markdown table (reports/bisect/<name>/bisect.md), in the style of compat.md: a row per
probed version in release order, then the answer with the evidence from both sides and their repro commands."""

from __future__ import annotations

from bench.bisect.search import Answer


def _cell(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    line = (line[: limit - 3] + "...") if len(line) > limit else line
    return line.replace("|", "\\|")


HEADLINES = {
    "found": "first bad **{bad}**, last good **{good}**",
    "ambiguous": "the break lies in {span} (untestable versions hide which); last good **{good}**",
    "good_is_bad": "the claimed good end **{first}** does not hold: every tested release is bad or untestable",
    "no_bad": "no testable version is bad; newest testable good: **{good}**",
}


def bisect_markdown(meta: dict, answer: Answer, records: dict) -> str:
    """meta: package, good, bad, scenarios, criterion, cases, command, candidates; records: version -> ProbeRecord."""
    cands = meta["candidates"]
    span = ", ".join([*answer.skipped_between, answer.first_bad or ""]).strip(", ")
    head = HEADLINES[answer.kind].format(
        bad=answer.first_bad, good=answer.last_good, span=span, first=cands[0]
    )
    out = [
        f"# Bisect: {meta['package']} {meta['good']} (good) .. {meta['bad']} (bad)",
        "",
        f"**Answer:** {head}.",
        "",
        f"- scenarios: {', '.join(f'`{s}`' for s in meta['scenarios'])}; cases: "
        + (", ".join(f"`{c}`" for c in meta["cases"]) or "all"),
        f"- bad when: `{meta['criterion']}`",
        f"- candidates ({len(cands)}, oldest first): {', '.join(cands)}; probed {len(answer.probes)}",
        f"- command: `{meta['command']}`" + (" (every candidate probed)" if meta.get("probe_all") else ""),
        "",
        "| # | version | probe order | state | stage | env | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    order = {p.version: p for p in answer.probes}
    for i, version in enumerate(cands, 1):
        label = records[version].version if version in records else version[:12]
        if version not in order:
            out.append(f"| {i} | {label} | - | not probed | - | - | - |")
            continue
        r = records[version]
        ran = f", {'reused a run of' if r.results_reused else 'ran'} {r.run_s:.0f}s" if r.run_s else ""
        env = ("cached" if r.env_cached else f"built {r.build_s:.0f}s") + ran
        state = {"bad": "**BAD**", "good": "good", "untestable": "untestable (skipped)"}[r.state]
        out.append(
            f"| {i} | {label} | {order[version].order} | {state} | {r.stage} | {env} | {_cell(r.reason)} |"
        )
    out += ["", "## Evidence", ""]
    sides = [("last good", answer.last_good), ("first bad", answer.first_bad)]
    if answer.kind == "good_is_bad":
        sides = [("the claimed good end", cands[0])]
        bad_ones = [p.version for p in answer.probes if p.state == "bad"]
        if meta.get("probe_all"):
            out += [
                f"Every candidate was probed: {len(bad_ones)} bad, "
                f"{sum(p.state == 'untestable' for p in answer.probes)} untestable, "
                f"{sum(p.state == 'good' for p in answer.probes)} good.",
                "",
            ]
        if len(bad_ones) > 1:
            sides.append(("the newest bad", bad_ones[-1]))
    for side, version in sides:
        if version is None or version not in records:
            continue
        r = records[version]
        out += [
            f"### {side}: {r.version}",
            "",
            f"- {r.state}: {_cell(r.reason, 1200)}",
            f"- imported: `{r.imported}`",
            f"- installed in the probe folder: {', '.join(r.installed)}",
            f"- reproduce: `{r.repro[0]}`",
            f"- or with the cached probe environment: `{r.repro[1]}`",
            "",
        ]
    skipped = [order[v] for v in cands if v in order and order[v].state == "untestable"]
    if skipped:
        out += ["## Skipped (untestable)", ""]
        out += [f"- {records[p.version].version}: {_cell(p.reason, 600)}" for p in skipped]
    return "\n".join(out) + "\n"
