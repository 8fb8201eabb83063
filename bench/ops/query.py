"""Queries that change nothing: their answer is checked against what a correct library reports."""

from __future__ import annotations

from bench.ops.base import Op
from bench.results.verdict import find_known, outcome


class ActiveAdapters(Op):
    """`model.active_adapters()`, checked against the names the expected adapter state holds active."""

    name = "active_adapters"
    own_expectations = frozenset({"active_adapters"})

    def apply(self, subject, step, adapters, locations):
        return list(subject.model.active_adapters())

    def own_outcomes(self, step, result, state, params):
        want = list(state.active)
        return [
            outcome(
                "active_adapters",
                str(want),
                str(result),
                result == want,
                f"active_adapters() returned {result}, expected {want}",
                find_known(step.known_failures, "active_adapters", params),
            )
        ]

    def script(self, w, step):
        w.emit("names = list(model.active_adapters())")
        w.emit("print('active_adapters():', names)")

    def script_check(self, w, expectation, step, state, what):
        want = list(state.active)
        with w.block(f"if names != {want!r}:"):
            w.emit(f"reproduced(f'{what}: active_adapters() returned {{names}}, expected ' + {repr(want)!r})")
        return True
