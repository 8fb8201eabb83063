"""The compat table: which hotswap guarantees hold under each transformers x peft combination.

`nox -s compat` runs the hotswap gating scenarios once per combination into reports/compat/<combo>/ and
writes a status.json there (installed? imported? ran?). This module reads those folders and renders one
markdown table, a row per combination: a combination that could not install or import is a row that says
so, and a guarantee broken by an upstream release shows as broken, never as a gap.

Only stdlib and bench.results.store are imported, so the table renders in a session whose install failed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from bench import VERDICT_RULES_VERSION
from bench.errors import BenchInputError
from bench.results.records import Results
from bench.results.store import RESULTS_FILE, load

STATUS_FILE = "status.json"
COMPAT_FILE = "compat.md"

# Stages a combination reaches, in order; only "ran" has verdicts.
STAGES = ("install failed", "import failed", "run failed", "ran")

# Verdict -> what the cell says about the guarantee. An xfail is an upstream bug we know of: the guarantee
# does not hold, and the table must not hide it behind the word "expected".
CELLS = {
    "pass": "holds",
    "xpass": "holds (known failure fixed: xpass)",
    "fail": "BROKEN",
    "xfail": "BROKEN (known)",
    "error": "BROKEN (error)",
    "skip": "skipped",
    "not_run": "not run",
}
HOLDING = ("pass", "xpass")


@dataclass(frozen=True)
class Combination:
    name: str  # the folder name, e.g. transformers-5.23.0_peft-0.21.2
    transformers: str
    peft: str
    stage: str
    detail: str  # why it stopped (first lines of pip's or python's error), or ""
    results: Results | None


def load_combinations(root: Path) -> list[Combination]:
    root = Path(root)
    if not root.is_dir():
        raise BenchInputError("no such folder (run `nox -s compat` first)", source=str(root))
    combos = []
    for folder in sorted(p for p in root.iterdir() if (p / STATUS_FILE).is_file()):
        source = str(folder / STATUS_FILE)
        try:
            status = json.loads((folder / STATUS_FILE).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BenchInputError(f"invalid JSON: {exc}", source=source) from None
        for key in ("transformers", "peft", "stage"):
            if not isinstance(status.get(key), str):
                raise BenchInputError("missing or not a string", source=source, field=key)
        if status["stage"] not in STAGES:
            raise BenchInputError(
                f"unknown stage {status['stage']!r} (one of {', '.join(STAGES)})",
                source=source,
                field="stage",
            )
        results = load(folder / RESULTS_FILE) if (folder / RESULTS_FILE).is_file() else None
        combos.append(
            Combination(
                name=folder.name,
                transformers=status["transformers"],
                peft=status["peft"],
                stage=status["stage"],
                detail=str(status.get("detail", "")),
                results=results,
            )
        )
    if not combos:
        raise BenchInputError(f"no combination folder with a {STATUS_FILE}", source=str(root))
    return sorted(combos, key=lambda c: (version_key(c.transformers), version_key(c.peft)))


def version_key(version: str) -> tuple:
    """Release order, not text order: 5.9.0 before 5.23.0."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.+-]", version))


def _verdicts(combo: Combination) -> dict[str, tuple[str, str]]:
    if combo.stage != "ran" or combo.results is None:
        return {}
    return {c.case_id: (c.verdict, c.reason) for c in combo.results.cases}


def _one_line(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return (line[: limit - 3] + "...") if len(line) > limit else line


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def compat_markdown(combos: list[Combination]) -> str:
    case_ids = sorted({cid for combo in combos for cid in _verdicts(combo)})
    out = [
        "# Hotswap guarantees across library versions",
        "",
        "One row per transformers x peft combination (`nox -s compat`), one column per hotswap gating case. "
        "`holds`: the case's expectations (zero recompiles, output equal to a freshly loaded reference) hold. "
        "`BROKEN (known)`: an upstream bug the scenario marks as a known failure. "
        "A combination that could not install, import or run says so in `status`.",
        "",
        "| " + " | ".join(["transformers", "peft", "status", "hold", *(f"`{c}`" for c in case_ids)]) + " |",
        "|" + "---|" * (4 + len(case_ids)),
    ]
    for combo in combos:
        verdicts = _verdicts(combo)
        if verdicts:
            held = sum(1 for v, _ in verdicts.values() if v in HOLDING)
            hold = f"{held}/{len(verdicts)}"
            torch = combo.results.environment.libraries.get("torch") if combo.results else None
            status = "ran" + (f" (torch {torch})" if torch else "")
            if combo.results.verdict_rules < VERDICT_RULES_VERSION:
                status += (
                    f"; judged under verdict rules {combo.results.verdict_rules} (now {VERDICT_RULES_VERSION}): "
                    "rerun `nox -s compat`"
                )
        else:
            hold = "-"
            status = combo.stage + (f": {_one_line(combo.detail, 240)}" if combo.detail else "")
        cells = [CELLS[verdicts[c][0]] if c in verdicts else "-" for c in case_ids]
        row = [combo.transformers, combo.peft, status, hold, *cells]
        out.append("| " + " | ".join(_cell(c) for c in row) + " |")
    out += ["", "## Why a guarantee does not hold", ""]
    reasons = [
        f"- transformers {combo.transformers}, peft {combo.peft}, `{cid}`: {CELLS[v]}: {_cell(_one_line(r, 300))}"
        for combo in combos
        for cid, (v, r) in sorted(_verdicts(combo).items())
        if v not in HOLDING
    ]
    ran = sum(1 for combo in combos if _verdicts(combo))
    if not ran:
        out.append(f"No combination ran (of {len(combos)}): see `status`.")
    elif not reasons:
        out.append(f"Every guarantee holds in every combination that ran ({ran} of {len(combos)}).")
    out += reasons
    return "\n".join(out) + "\n"
