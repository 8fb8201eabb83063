"""Standalone reproduction scripts for failing cases: torch + transformers + peft only, exit 1 when the
failure reproduces. The ops write their own calls (bench/ops, `script`); script.py assembles the file."""

from bench.report.repro.script import (
    REPRO_DIR,
    REPRO_VERDICTS,
    Repro,
    ReproUnsupported,
    Target,
    case_for,
    find_target,
    repro_file_name,
    repro_script,
    write_repros,
)
from bench.report.repro.writer import ident

__all__ = [
    "REPRO_DIR",
    "REPRO_VERDICTS",
    "Repro",
    "ReproUnsupported",
    "Target",
    "case_for",
    "find_target",
    "ident",
    "repro_file_name",
    "repro_script",
    "write_repros",
]
