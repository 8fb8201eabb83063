"""docs/results-schema.md must name every field of every record, and only fields that exist."""

from __future__ import annotations

import dataclasses
import re

from bench.results import measures, records, serving_records
from tests.conftest import REPO

DOC = (REPO / "docs" / "results-schema.md").read_text()
RECORDS = (
    "Results",
    "Environment",
    "CaseResult",
    "WorkerInfo",
    "TimingPolicy",
    "Footprint",
    "StepRecord",
    "TimingStats",
    "CompileStats",
    "MemoryStats",
    "OutputCheck",
    "AdapterEffect",
    "StateContrast",
    "Outcome",
    "TrainStats",
    "RepeatStats",
    "ServingRecord",
    "ServingFigures",
    "RequestRecord",
)


def _section(name: str) -> str:
    m = re.search(rf"^## {name}\n(.*?)(?=^## |\Z)", DOC, re.S | re.M)
    assert m, f"no section for {name}"
    return m.group(1)


def _record(name: str):
    """A record class by name, from whichever results module defines it."""
    return next(getattr(m, name) for m in (records, measures, serving_records) if hasattr(m, name))


def test_every_field_is_documented():
    for name in RECORDS:
        text = _section(name)
        for f in dataclasses.fields(_record(name)):
            assert f"`{f.name}`" in text, f"{name}.{f.name} is not in docs/results-schema.md"


def test_no_documented_field_is_missing_from_the_code():
    for name in RECORDS:
        fields = {f.name for f in dataclasses.fields(_record(name))}
        table_rows = re.findall(r"^\| ((?:`\w+`(?:, )?)+) \|", _section(name), re.M)
        documented = {w for row in table_rows for w in re.findall(r"`(\w+)`", row)}
        assert documented <= fields, f"{name}: documented but not in the code: {documented - fields}"
