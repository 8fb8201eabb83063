"""One search from start to end: candidates, probes (each into its own folder), the answer, the table."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from bench.bisect import criteria, versions
from bench.bisect.probe import Target, run_probe
from bench.bisect.search import GOOD, Answer, Probe, bisect
from bench.bisect.table import bisect_markdown
from bench.errors import BenchInputError
from bench.results.store import load

TABLE_FILE = "bisect.md"
ANSWER_FILE = "bisect.json"


def search(
    target: Target,
    good: str,
    bad: str,
    scenarios: list[str],
    criterion: criteria.Criterion,
    cases: tuple[str, ...],
    out: Path,
    cache_root: Path,
    constraints_text: str,
    command: str,
    candidates: list[str] | None = None,
    python: str = sys.executable,
    progress=print,
    extra_env: dict[str, str] | None = None,
    probe_all: bool = False,
    rerun: bool = False,
) -> tuple[Answer, str]:
    """probe_all: probe every candidate first (a survey, linear), then answer from those probes: what
    shows that every release in the range is bad when the good end already is. rerun: run every probe's
    scenarios even where an identical run is stored (bench.bisect.probe.run_key).
    Long because: the bisection reads as one loop over the candidates with its stored-probe reuse and boundary
    checks; split, every piece would take the whole search state."""
    # Resolved here, against the caller's folder: the probes run in the checkout (bench.bisect.probe.ROOT). A
    # scenario that is not there is an input error before any probe, never a probe that reads as `bad`.
    for s in scenarios:
        if not Path(s).exists():
            raise BenchInputError("no such scenario file or folder", source=str(s))
    scenarios = [str(Path(s).absolute()) for s in scenarios]
    out, cache_root = out.absolute(), cache_root.absolute()
    if candidates is None:
        if target.repo is not None:
            candidates = versions.commits(target.repo, good, bad)
        else:
            candidates = versions.releases(target.package, good, bad)
    progress(f"peft-bench bisect: {len(candidates)} candidates: {', '.join(c[:12] for c in candidates)}")
    out.mkdir(parents=True, exist_ok=True)
    records: dict = {}
    baseline = {}

    def probe(version: str):
        rec = run_probe(
            target,
            version,
            scenarios,
            criterion,
            cases,
            out,
            cache_root,
            constraints_text,
            baseline=baseline.get("results"),
            python=python,
            extra_env=extra_env,
            rerun=rerun,
        )
        records[version] = rec
        if criterion.needs_baseline and "results" not in baseline and rec.state == GOOD:
            baseline["results"] = load(out / f"{target.package}-{rec.version}" / "results.json")
        progress(f"peft-bench bisect: {rec.version}: {rec.state} ({rec.stage}): {rec.reason[:200]}")
        return rec.state, rec.reason

    if probe_all:
        for version in candidates:
            probe(version)
        answer = bisect(candidates, lambda v: (records[v].state, records[v].reason))
        answer = replace(
            answer,
            probes=tuple(
                Probe(v, records[v].state, records[v].reason, i) for i, v in enumerate(candidates, 1)
            ),
        )
    else:
        answer = bisect(candidates, probe)
    meta = {
        "package": target.package,
        "repo": str(target.repo) if target.repo else None,
        "good": good,
        "bad": bad,
        "scenarios": [str(s) for s in scenarios],
        "criterion": criterion.text,
        "cases": list(cases),
        "command": command,
        "candidates": candidates,
        "probe_all": probe_all,
        "rerun": rerun,
    }
    text = bisect_markdown(meta, answer, records)
    (out / TABLE_FILE).write_text(text)
    (out / ANSWER_FILE).write_text(
        json.dumps(
            {**meta, "answer": asdict(answer), "probes": {v: asdict(r) for v, r in records.items()}}, indent=1
        )
        + "\n"
    )
    return answer, text
