"""Count expectations (`== 0`, `>= 1`): parsed, checked for being decidable, and held against a count."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

_COMPARATORS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_COMPARISON_RE = re.compile(r"^\s*(==|!=|<=|>=|<|>)\s*(\d+)\s*$")


# The largest recompile or graph-break count an expectation is judged against. Dynamo stops recompiling after
# torch._dynamo.config.accumulated_recompile_limit (256); graph breaks are not capped, but a scenario's tiny
# models have far fewer than 1000 break points. `>= 1000` therefore never holds and is refused.
COUNT_BOUND = 999


def _probe_counts(value: int, max_count: int) -> set[int]:
    """Counts in [0, max_count] where a comparison with `value` can change its answer: enough to decide
    whether it always or never holds over the whole range (each operator is monotone or a point test)."""
    near = {0, max_count, value - 1, value, value + 1}
    return {n for n in near if 0 <= n <= max_count}


@dataclass(frozen=True)
class CountBound:
    """A count expectation such as `== 0` or `>= 1`."""

    op: str
    value: int

    @classmethod
    def parse(cls, text: str | int) -> CountBound:
        if isinstance(text, bool):
            raise ValueError("expected a comparison such as '== 0' or '>= 1', got a boolean")
        if isinstance(text, int):
            return cls("==", text)
        m = _COMPARISON_RE.match(text)
        if not m:
            raise ValueError(f"expected a comparison such as '== 0' or '>= 1', got {text!r}")
        return cls(m.group(1), int(m.group(2)))

    def holds(self, actual: int) -> bool:
        return _COMPARATORS[self.op](actual, self.value)

    def satisfiable(self, max_count: int = COUNT_BOUND) -> str | None:
        """Why no count, or every count, in [0, max_count] decides this comparison; None when it can go
        either way. An expectation that cannot fail (`>= 0`) checks nothing and one that cannot hold
        (`< 0`, `>= 1000` over a bound of 999) fails whatever the library does: both are scenario errors."""
        held = [self.holds(n) for n in _probe_counts(self.value, max_count)]
        if not any(held):
            return f"'{self}' can never hold: no count between 0 and {max_count} satisfies it"
        if all(held):
            return f"'{self}' always holds (every count between 0 and {max_count} satisfies it): it checks nothing"
        return None

    @property
    def allows_zero_only(self) -> bool:
        """True when only 0 satisfies it: such a step runs under error_on_recompile=True."""
        return self.holds(0) and not self.holds(1)

    def __str__(self) -> str:
        return f"{self.op} {self.value}"
