"""Queries that change nothing: their answer is checked against what a correct library reports."""

from __future__ import annotations

from bench.ops.base import Op


class ActiveAdapters(Op):
    """`model.active_adapters()`, checked against the names the expected adapter state holds active."""

    name = "active_adapters"
    own_expectations = frozenset({"active_adapters"})

    def apply(self, subject, step, adapters, locations):
        return list(subject.model.active_adapters())

    def script(self, w, step):
        w.emit("names = list(model.active_adapters())")
        w.emit("print('active_adapters():', names)")
