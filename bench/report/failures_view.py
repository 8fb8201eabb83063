"""The "Failures and known failures" list, as records both renderers lay out: per case that is not a plain
pass (an unverified pass included: "pass: unverified"), how it went wrong (a silently wrong answer reads differently from a refusal), the scenario's
known-failure reason and fingerprint, the reason, the informative lines of its log where the reason points
to them (or the case raised or errored), and the log's path for a link."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.report import caselogs, data, flags
from bench.report.memo import per_results
from bench.results.records import Results

# Verdicts whose log is worth quoting: something raised or the worker could not finish.
_QUOTE_KINDS = ("raised", "error")


@dataclass(frozen=True)
class FailureItem:
    case_id: str
    verdict: str
    kind: str  # flags.Failure.kind
    reason: str
    known_failure: str  # reason [fingerprint: ...]; empty when no marker matched
    log: str | None  # relative to the results folder
    log_lines: tuple[str, ...]
    log_note: str


@per_results
def items(results: Results, results_dir: Path | None) -> list[FailureItem]:
    out = []
    by_id = {c.case_id: c for c in results.cases}
    for f in data.failing_cases(results):
        case = by_id[f.case_id]
        # An unverified pass (data.failing_cases lists it last): it passed, on one oracle's word.
        failure = flags.failure_of(case) if case.verdict != "pass" else flags.Failure("unverified", None, "")
        quote = failure.kind.startswith(_QUOTE_KINDS) or caselogs.points_elsewhere(f.reason)
        log = caselogs.detail(case, results_dir) if results_dir is not None else None
        out.append(
            FailureItem(
                case_id=f.case_id,
                verdict=str(f.verdict),
                kind=failure.kind,
                reason=f.reason or "(no reason recorded)",
                known_failure=failure.known_failure,
                log=log.path if log else None,
                log_lines=log.lines if (log and quote) else (),
                log_note=log.note if (log and quote) else "",
            )
        )
    return out


def label(item: FailureItem) -> str:
    """The verdict with how it went wrong: "xfail: wrong output (silent)", "xfail: raised"."""
    return f"{item.verdict}: {item.kind}" if item.kind not in (item.verdict,) else item.verdict
