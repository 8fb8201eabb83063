"""Count dynamo's work during a step: frame compiles, recompiles (with the failed guard) and graph breaks.

torch 2.13 has no recompile counter: a recompile is a compilation-metrics record with `recompile_reason`
set. The metrics deque is bounded (64), so it is cleared on entry instead of diffed. Graph breaks come from
`torch._dynamo.utils.counters["graph_break"]` (reason -> count), diffed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from bench.results.measures import CompileStats

# Raised while counting, so that a case that recompiles often is counted rather than silently falling back
# to eager at the default limit of 8.
COUNTING_RECOMPILE_LIMIT = 256
# torch keeps the last 64 compilation-metrics records by default; a step with more frame compiles would be
# undercounted silently. Recompiles are counted from these records, so the buffer must outgrow the limit.
COUNTING_METRICS_LIMIT = 16 * COUNTING_RECOMPILE_LIMIT


@dataclass
class _Window:
    stats: CompileStats | None = None
    recompile_error: str | None = None
    extra_reasons: list[str] = field(default_factory=list)


def configure_dynamo_for_counting() -> None:
    """Reset dynamo's global state for a fresh case and raise the recompile limit. Called once per case."""
    import torch

    torch._dynamo.reset()
    torch._dynamo.config.recompile_limit = COUNTING_RECOMPILE_LIMIT
    torch._dynamo.config.accumulated_recompile_limit = COUNTING_RECOMPILE_LIMIT * 4
    # Hitting the limit anyway must fail the call, not fall back to eager silently.
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    torch._dynamo.utils.counters.clear()
    torch._dynamo.utils.set_compilation_metrics_limit(COUNTING_METRICS_LIMIT)
    torch._dynamo.utils.clear_compilation_metrics()


class CompileWindow:
    """Dynamo's work between start() and stop() (or while a with-block runs): `metrics` (one compile record
    per frame compile), `recompiles` with their one-line `reasons`, `graph_breaks` with their
    `break_reasons`, and `unique_graphs`.

    Reproduction scripts carry this class and _one_line verbatim (bench.report.repro), so a script counts
    exactly as the run did: it imports only torch, inside its methods.
    """

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        from collections import Counter

        from torch._dynamo.utils import clear_compilation_metrics, counters

        clear_compilation_metrics()
        self._breaks_before = Counter(counters["graph_break"])
        self._unique_before = counters["stats"]["unique_graphs"]

    def stop(self):
        from collections import Counter

        from torch._dynamo.utils import counters, get_compilation_metrics

        self.metrics = list(get_compilation_metrics())
        breaks = Counter(counters["graph_break"])
        breaks.subtract(self._breaks_before)
        self.graph_breaks = sum(v for v in breaks.values() if v > 0)
        self.break_reasons = sorted(_one_line(k) for k, v in breaks.items() if v > 0)
        self.reasons = [_one_line(m.recompile_reason) for m in self.metrics if m.recompile_reason]
        self.recompiles = len(self.reasons)
        self.unique_graphs = counters["stats"]["unique_graphs"] - self._unique_before


@contextlib.contextmanager
def count_compiles() -> Iterator[_Window]:
    """Yields a window whose `.stats` is filled on exit, also when the body raises."""
    window = _Window()
    counted = CompileWindow()
    counted.start()
    try:
        yield window
    finally:
        counted.stop()
        window.stats = CompileStats(
            recompiles=counted.recompiles,
            frame_compiles=len(counted.metrics),
            graph_breaks=counted.graph_breaks,
            unique_graphs=counted.unique_graphs,
            recompile_reasons=tuple(counted.reasons),
            graph_break_reasons=tuple(counted.break_reasons),
            compile_time_s=sum((m.entire_frame_compile_time_s or 0.0) for m in counted.metrics),
        )


def compile_mark() -> int:
    """Where dynamo's compile records stand now: for counting inside a count_compiles window (which cleared
    them on entry, with a buffer of COUNTING_METRICS_LIMIT) without clearing them again."""
    from torch._dynamo.utils import get_compilation_metrics

    return len(get_compilation_metrics())


def compiled_since(mark: int) -> tuple[int, int, tuple[str, ...]]:
    """(recompiles, frame compiles, recompile reasons) since `mark` (compile_mark)."""
    from torch._dynamo.utils import get_compilation_metrics

    new = list(get_compilation_metrics())[mark:]
    reasons = tuple(_one_line(m.recompile_reason) for m in new if m.recompile_reason)
    return len(reasons), len(new), reasons


def _one_line(text: str) -> str:
    # The guard text is what a reader needs; dynamo appends the user stack, which is noise here.
    return " ".join(str(text).split(" User stack trace:")[0].split())[:500]


@contextlib.contextmanager
def no_recompile_allowed(enabled: bool) -> Iterator[None]:
    """torch._dynamo.config.patch(error_on_recompile=True) when enabled; a RecompileError then escapes."""
    if not enabled:
        yield
        return
    import torch

    with torch._dynamo.config.patch(error_on_recompile=True):
        yield
