"""The inputs' shape a step runs on: the workload's, or the step's own (forward's `batch_size` / `seq_len`)."""

from __future__ import annotations

from dataclasses import replace

from bench.spec.schema import Step, Workload


def step_workload(step: Step, workload: Workload) -> Workload | None:
    """The workload with the step's shape; None when the step runs on the workload's own."""
    if step.batch_size is None and step.seq_len is None:
        return None
    return replace(
        workload,
        batch_size=step.batch_size or workload.batch_size,
        seq_len=step.seq_len or workload.seq_len,
    )
