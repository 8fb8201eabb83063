"""The worker's own log of a case (cases/<case>.log beside results.json), and the lines of it that say what
an error message only points to.

Some libraries print the details of a failure before raising an exception that says "look at the above
report" (transformers' loading report: which key, which shape in the checkpoint, which in the model). The
case's reason carries the exception only; the details are in the log, and the report quotes them from there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bench.results.records import CaseResult

CASES_DIR = "cases"
# Lines worth quoting: transformers' loading report (its table rows and heading), shape and size complaints,
# and the exception line a traceback ends with.
_DETAIL = re.compile(
    r"LOAD REPORT|MISMATCH|MISSING|UNEXPECTED|CONVERSION|size mismatch|found shape|ckpt:|"
    r"^\w+(Error|Exception|Warning):|^\s*raise \w+",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_RULE = re.compile(r"^[\s\-=+|:]*$")  # table borders and blank lines
MAX_LINES = 12
MAX_LINE_CHARS = 240
MAX_READ_BYTES = 2 * 2**20  # a log that grew without bound: its last 2 MiB hold the failure


@dataclass(frozen=True)
class LogDetail:
    path: str | None  # the log, relative to the results folder (for a link); None when not found
    lines: tuple[str, ...]  # the informative lines, in log order
    note: str = ""  # why there are none


def log_file(case: CaseResult, results_dir: Path | None) -> Path | None:
    """The case's log under the results folder (cases/<name>.log), where the worker wrote it; the recorded
    path is relative to wherever the run was started, so only its file name is trusted."""
    if results_dir is None or not case.worker.log:
        return None
    path = Path(results_dir) / CASES_DIR / Path(case.worker.log).name
    return path if path.is_file() else None


def _read_tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - MAX_READ_BYTES))
        return f.read().decode("utf-8", errors="replace")


def informative_lines(text: str) -> tuple[str, ...]:
    """The lines that carry the details: loading-report rows, shape complaints, exception lines. Table
    borders, ANSI colours and repeats are dropped; at most MAX_LINES, the first ones kept (the report's head
    names the model, its rows the keys)."""
    out: list[str] = []
    for raw in text.splitlines():
        line = _ANSI.sub("", raw).rstrip()
        if _RULE.match(line) or not _DETAIL.search(line.strip()):
            continue
        line = " ".join(line.replace("|", " ").split())[:MAX_LINE_CHARS]
        if line not in out:
            out.append(line)
        if len(out) >= MAX_LINES:
            break
    return tuple(out)


def detail(case: CaseResult, results_dir: Path | None) -> LogDetail:
    path = log_file(case, results_dir)
    if path is None:
        why = "no log recorded" if not case.worker.log else f"log {Path(case.worker.log).name} not found"
        return LogDetail(None, (), why + (" beside the results" if results_dir else ""))
    rel = f"{CASES_DIR}/{path.name}"
    try:
        lines = informative_lines(_read_tail(path))
    except OSError as exc:
        return LogDetail(rel, (), f"could not read the log: {exc}")
    return LogDetail(rel, lines, "" if lines else "the log holds no detail lines")


def points_elsewhere(reason: str) -> bool:
    """The message sends the reader to output it does not contain."""
    return bool(re.search(r"above report|see (the )?(log|above)|for details look", reason, re.IGNORECASE))
