"""Standalone reproduction scripts for failing cases: torch + transformers + peft only, exit 1 when the
failure reproduces. The ops write their own calls and checks (bench/ops, `script`, `script_check`); script.py
drives the writer through the steps, assemble.py writes the file around main()."""

from bench.report.repro.assemble import Target, find_target
from bench.report.repro.script import (
    REPRO_DIR,
    REPRO_VERDICTS,
    Repro,
    case_for,
    repro_file_name,
    repro_script,
    write_repros,
)

__all__ = [
    "REPRO_DIR",
    "REPRO_VERDICTS",
    "Repro",
    "Target",
    "case_for",
    "find_target",
    "repro_file_name",
    "repro_script",
    "write_repros",
]
