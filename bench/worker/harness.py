"""What the harness does around an op beside the scenario's own calls: the requires_grad policy
(harness.freeze_params). Kept apart so that the policy is one function a negative control can plant."""

from __future__ import annotations

from bench.spec.schema import Step
from bench.worker.facts import StepRun


def after_state_op(model, step: Step, freeze: bool, run: StepRun) -> None:
    """requires_grad as the op left it: reset (harness.freeze_params, the workaround) or left alone (the flow
    users run), and said in a note either way, since dynamo guards on it."""
    grad = [p for p in model.parameters() if p.requires_grad]
    if not grad:
        return
    if freeze:
        for p in grad:
            p.requires_grad_(False)
        run.notes.append(
            f"harness.freeze_params: requires_grad reset on {len(grad)} tensors after {step.op} (transformers "
            "flips it; dynamo would recompile on the requires_grad guard)"
        )
    else:
        run.notes.append(
            f"{len(grad)} tensors require grad after {step.op}, as the library left them (harness.freeze_params "
            "is off): dynamo guards on requires_grad"
        )
