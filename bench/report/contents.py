"""The report's performance sections in reading order (bench.report.sections and bench.report.serving)."""

from __future__ import annotations

from bench.report import sections, serving
from bench.report.memo import per_results
from bench.report.sections import Section
from bench.results.records import Results


@per_results
def all_sections(results: Results) -> list[Section]:
    """In report order, after the environment, the verdicts and the failures."""
    return [
        sections.latency(results),
        serving.section(results),
        sections.switch(results),
        sections.train(results),
        sections.memory(results),
        sections.growth(results),
        sections.recompiles(results),
    ]
