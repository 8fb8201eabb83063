"""What counts as worse, per metric: the comparison policy as a table, and its overrides from a TOML file.

Each metric says which direction is better, how it is judged (a verdict, a deterministic count, repeated
samples under a U test, a single call, bytes), whether a worse value fails the gate, and how far it must
move to count: by more than `rel` (a fraction of the baseline) AND by more than `abs` (the metric's unit).

A config file overrides any of rel, abs, alpha and gated per metric:

    [thresholds.latency_ms]
    rel = 0.10       # fail on a median 10% slower (with a significant U test and a fastest call 10% slower)
    alpha = 0.01

    [thresholds.rss_peak_bytes]
    abs = 67108864   # 64 MiB
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.errors import BenchInputError

MiB = 2**20


@dataclass(frozen=True)
class MetricPolicy:
    metric: str
    basis: str  # verdict | count | samples | single | bytes
    unit: str  # ms | count | bytes | ratio | verdict
    gated: bool  # a worse value fails the gate
    rel: float = 0.0  # a worse value must move by more than this fraction of the baseline ...
    abs: float = 0.0  # ... and by more than this many units
    alpha: float | None = None  # significance level of the one-sided U test (samples only)
    better: str = "lower"
    why: str = ""


DEFAULT_POLICY: dict[str, MetricPolicy] = {
    p.metric: p
    for p in (
        MetricPolicy(
            "verdict", "verdict", "verdict", True, why="a case that passed (or was a known failure) now fails"
        ),
        MetricPolicy("recompiles", "count", "count", True, why="deterministic: any rise is a change in code"),
        MetricPolicy(
            "graph_breaks", "count", "count", True, why="deterministic: any rise is a change in code"
        ),
        MetricPolicy(
            "total_recompiles", "count", "count", True, why="case total, compared where steps do not align"
        ),
        MetricPolicy(
            "total_graph_breaks", "count", "count", True, why="case total, compared where steps do not align"
        ),
        MetricPolicy(
            "frame_compiles",
            "count",
            "count",
            False,
            why="first compiles of a new graph are expected work; recompiles are gated instead",
        ),
        MetricPolicy(
            "latency_ms",
            "samples",
            "ms",
            True,
            rel=0.25,
            alpha=0.01,
            why="warm repeated calls: U test on the raw samples, median and fastest call beyond rel",
        ),
        MetricPolicy(
            "op_time_ms", "single", "ms", False, rel=0.5, why="one call (n=1): no test possible, shown only"
        ),
        MetricPolicy(
            "first_call_ms",
            "single",
            "ms",
            False,
            rel=0.5,
            why="one call (n=1) carrying any compile: shown only; recompiles are gated as counts",
        ),
        MetricPolicy(
            "switch_ms",
            "single",
            "ms",
            False,
            rel=0.5,
            why="swap call + first call after it (n=1 each): shown only; the ratio to reload is gated",
        ),
        MetricPolicy(
            "rss_peak_bytes",
            "bytes",
            "bytes",
            True,
            rel=0.10,
            abs=32 * MiB,
            why="the case's highest per-step RSS high-water mark; allocator noise is a few MiB",
        ),
        MetricPolicy(
            "cuda_allocated_peak_bytes",
            "bytes",
            "bytes",
            True,
            rel=0.05,
            abs=8 * MiB,
            why="the case's highest CUDA allocator peak; deterministic up to workspace choices",
        ),
        MetricPolicy(
            "footprint_bytes",
            "bytes",
            "bytes",
            True,
            rel=0.01,
            why="model.get_memory_footprint() + quantisation state: deterministic",
        ),
        MetricPolicy(
            "switch_over_reload",
            "single",
            "ratio",
            True,
            rel=2.0,
            why="within one run: (swap + first call) / (plain load + first call); n=1 each, so only a "
            "change beyond 3x counts",
        ),
        MetricPolicy(
            "compiled_over_eager",
            "samples",
            "ratio",
            True,
            rel=0.25,
            alpha=0.01,
            why="within one run: a compiled step's samples over the eager case's median for the same step",
        ),
        MetricPolicy(
            "latency_over_first",
            "samples",
            "ratio",
            True,
            rel=0.25,
            alpha=0.01,
            why="within one run: a later measured step's samples over the case's first measured step's median",
        ),
    )
}

_OVERRIDABLE = {"rel": float, "abs": float, "alpha": float, "gated": bool}
# Command-line shortcuts: one flag sets a field of several metrics at once.
LATENCY_METRICS = ("latency_ms", "compiled_over_eager", "latency_over_first")
MEMORY_METRICS = ("rss_peak_bytes", "cuda_allocated_peak_bytes")


def load_policy(
    path: str | Path | None, base: dict[str, MetricPolicy] | None = None
) -> dict[str, MetricPolicy]:
    """The default policy with a TOML file's overrides applied; every error names the file and the field."""
    policy = dict(DEFAULT_POLICY if base is None else base)
    if path is None:
        return policy
    path = Path(path)
    source = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchInputError("no such threshold config file", source=source) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BenchInputError(f"not a TOML file: {exc}", source=source) from None
    except RecursionError:
        raise BenchInputError("not a TOML file: nested too deeply", source=source) from None
    except ValueError as exc:  # tomllib raises it for an integer literal of more than 4300 digits
        raise BenchInputError(f"not a TOML file: {' '.join(str(exc).split())[:100]}", source=source) from None
    except OSError as exc:  # a folder, no permission
        raise BenchInputError(f"cannot read: {exc.strerror}", source=source) from None
    unknown_top = set(data) - {"thresholds"}
    if unknown_top:
        raise BenchInputError(
            "unknown table; a threshold config holds only [thresholds.METRIC] tables",
            source=source,
            field=sorted(unknown_top)[0],
        )
    tables = data.get("thresholds", {})
    if not isinstance(tables, dict):
        raise BenchInputError("expected a table of metrics", source=source, field="thresholds")
    for metric, fields in tables.items():
        where = f"thresholds.{metric}"
        if metric not in policy:
            raise BenchInputError(
                f"unknown metric; known: {', '.join(sorted(policy))}", source=source, field=where
            )
        if not isinstance(fields, dict):
            raise BenchInputError("expected a table such as { rel = 0.1 }", source=source, field=where)
        policy[metric] = _override(policy[metric], fields, source, where)
    return policy


def _override(p: MetricPolicy, fields: dict[str, Any], source: str, where: str) -> MetricPolicy:
    changes: dict[str, Any] = {}
    for key, value in fields.items():
        field = f"{where}.{key}"
        if key not in _OVERRIDABLE:
            raise BenchInputError(
                f"unknown field; allowed: {', '.join(_OVERRIDABLE)}", source=source, field=field
            )
        want = _OVERRIDABLE[key]
        if want is bool:
            if not isinstance(value, bool):
                raise BenchInputError("expected true or false", source=source, field=field)
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BenchInputError("expected a number", source=source, field=field)
            try:
                value = float(value)
            except OverflowError:  # a TOML integer beyond a float
                raise BenchInputError("number out of range", source=source, field=field) from None
            # NaN compares false with everything: a NaN threshold would let any regression through.
            if not math.isfinite(value):
                raise BenchInputError(f"must be a finite number, got {value}", source=source, field=field)
            if value < 0:
                raise BenchInputError("must not be negative", source=source, field=field)
            if key == "alpha":
                if p.basis != "samples":
                    raise BenchInputError(
                        f"alpha applies to sampled metrics only; {p.metric} is judged as {p.basis}",
                        source=source,
                        field=field,
                    )
                if not 0 < value < 1:
                    raise BenchInputError("must be between 0 and 1", source=source, field=field)
        changes[key] = value
    return replace(p, **changes)


def with_flags(
    policy: dict[str, MetricPolicy],
    *,
    latency_rel: float | None = None,
    memory_rel: float | None = None,
    alpha: float | None = None,
) -> dict[str, MetricPolicy]:
    """Command-line overrides, applied after the config file."""
    out = dict(policy)
    for name, value, metrics, field in (
        ("--latency-rel", latency_rel, LATENCY_METRICS, "rel"),
        ("--memory-rel", memory_rel, MEMORY_METRICS, "rel"),
        ("--alpha", alpha, tuple(m for m, p in policy.items() if p.basis == "samples"), "alpha"),
    ):
        if value is None:
            continue
        if not math.isfinite(value):
            raise BenchInputError(f"{name}: must be a finite number, got {value}")
        if value < 0 or (field == "alpha" and not 0 < value < 1):
            raise BenchInputError(f"{name}: out of range: {value}")
        for m in metrics:
            out[m] = replace(out[m], **{field: value})
    return out
