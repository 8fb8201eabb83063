"""A scenario as one case sees it: expectations given per compile setting reduced to the case's own."""

from __future__ import annotations

from dataclasses import replace

from bench.spec.schema import Scenario


def scope_to_compile(scenario: Scenario, label: str) -> Scenario:
    """Each step's `recompiles` table (Expectations.recompiles_by_compile) replaced by the comparison for the
    compile setting `label`; a label the table does not name leaves no recompile expectation (an eager case:
    the loader requires every compiled setting to be named)."""

    def scoped(step):
        pairs = dict(step.expect.recompiles_by_compile)
        if not pairs:
            return step
        expect = replace(step.expect, recompiles=pairs.get(label), recompiles_by_compile=())
        return replace(step, expect=expect)

    return replace(scenario, steps=tuple(scoped(s) for s in scenario.steps))
