"""The estimate as text: one short line for the start of `run`, a table per case for `list --estimate`."""

from __future__ import annotations

from bench.estimate.calibration import RunRecord
from bench.estimate.plan import Estimate
from bench.estimate.policy import SIZE_SPREAD_TO_FIT, SIZE_TO_FIT_BYTES

MIB = 2**20


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes} min {s} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def params_text(params: int | None) -> str:
    if params is None:
        return "unknown"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if params >= scale:
            return f"{params / scale:.3g}{suffix}"
    return str(params)


def last_text(run: RunRecord | None) -> str:
    if run is None or not run.measured_total_s or run.estimate_total_s is None:
        return "no earlier estimate to compare"
    ratio = run.estimate_total_s / run.measured_total_s
    return (
        f"last estimate: {run.estimate_total_s:.0f} s predicted, {run.measured_total_s:.0f} s measured, "
        f"{ratio:.2f}x"
    )


def calibration_text(est: Estimate) -> str:
    if est.problem:
        return f"uncalibrated (built-in defaults: {est.problem})"
    n = est.coefficients.calibrated_cases
    if not n:
        return "uncalibrated (built-in defaults; a run calibrates it)"
    if sizes_unfitted(est):
        return (
            f"calibrated on {n} measured case(s); the terms that scale with model size at their defaults (no "
            f"stored runs of models {SIZE_SPREAD_TO_FIT:g}x apart in size, the largest "
            f"{SIZE_TO_FIT_BYTES / MIB:.0f} MiB or more)"
        )
    return f"calibrated on {n} measured case(s)"


def sizes_unfitted(est: Estimate) -> bool:
    """Whether a calibrated estimate holds a model large enough for its size terms to matter while those terms
    are still the built-in defaults: worth saying, since 'calibrated' alone would claim more than it is."""
    large = any((c.features.weight_bytes or 0) >= SIZE_TO_FIT_BYTES for c in est.cases)
    return bool(est.coefficients.calibrated_cases) and not est.coefficients.sizes_fitted and large


def load_text(est: Estimate) -> str:
    if est.load_1min is None:
        return ""
    own = f", {est.own_load:.1f} of it the last run's" if est.own_load >= 0.05 else ""
    return f"load {est.load_1min:.1f} on {est.cores} core(s){own}: x{est.slowdown:.1f}"


def run_line(est: Estimate) -> str:
    """The line `run` prints before its first case: short, the figures a reader decides on."""
    unknown = f" + {len(est.unknown)} case(s) of unknown size" if est.unknown else ""
    rss = est.peak_rss_bytes
    peak = f", peak RSS {rss / MIB:.0f} MiB" if rss is not None else ""
    n = est.coefficients.calibrated_cases
    parts = [
        f"peft-bench: estimate {duration(est.total_wall_s)}{unknown} on {est.jobs} job(s){peak}",
        load_text(est),
        (f"calibrated on {n} case(s)" + (", size terms default" if sizes_unfitted(est) else ""))
        if n
        else "uncalibrated (built-in defaults)",
    ]
    if est.last_run is not None:
        parts.append(last_text(est.last_run))
    return "; ".join(p for p in parts if p)


def table(est: Estimate) -> str:
    """`list --estimate`: one row per case, then the totals and where the coefficients came from."""
    head = ("case", "params", "precision", "compile", "wall s", "peak RSS MiB")
    rows = [
        (
            c.features.case_id,
            params_text(c.features.params),
            c.features.precision,
            c.features.backend,
            "unknown" if c.wall_s is None else f"{c.wall_s:.1f}",
            "unknown" if c.peak_rss_bytes is None else f"{c.peak_rss_bytes / MIB:.0f}",
        )
        for c in est.cases
    ]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]

    def line(r):
        return "  ".join(
            v.ljust(w) if i < 4 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))
        )

    known = [c.wall_s for c in est.cases if c.wall_s is not None]
    out = [line(head), *map(line, rows), ""]
    out.append(
        f"total: {len(est.cases)} case(s), {sum(known):.0f} s of cases"
        + (f", {len(est.unknown)} of unknown size not counted" if est.unknown else "")
    )
    out.append(
        f"run on {est.jobs} job(s): {duration(est.total_wall_s)} "
        f"(with {est.coefficients.run_overhead_s * est.slowdown:.0f} s of start-up"
        + (f"; {load_text(est)}, in every figure above)" if est.load_1min is not None else ")")
        + (
            f", peak RSS {est.peak_rss_bytes / MIB:.0f} MiB per case"
            if est.peak_rss_bytes is not None
            else ""
        )
    )
    out.append(f"{calibration_text(est)}: {est.calibration_file}")
    out.append(last_text(est.last_run))
    return "\n".join(out)
