"""A step on its own input shape (forward's `batch_size` / `seq_len`): for that step the model under test is
called on inputs of that shape, and both oracles compute the step's references on the very same inputs.

The inputs are drawn as the workload's are (bench.engine.model.make_inputs: its seed, ids 3 and up), and each
shape's oracles are copies of the case's with their own caches, made once per shape and reused."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace

from bench.engine.model import make_inputs, vocab_size_of
from bench.spec.schema import Step, Workload
from bench.spec.shapes import step_workload
from bench.worker.prepare import Oracles, Ready


@contextlib.contextmanager
def on_step_shape(ready: Ready, step: Step) -> Iterator[Oracles]:
    """Yields the oracles of the step's shape; the subject's inputs are the step's until the block ends."""
    subject = ready.subject
    workload = step_workload(step, subject.workload)
    if workload is None:
        yield ready.oracles
        return
    key = (workload.batch_size, workload.seq_len)
    if key not in ready.shaped:
        inputs = make_inputs(workload, vocab_size_of(subject.model), subject.device)
        ready.shaped[key] = (inputs, _oracles_on(ready.oracles, inputs, workload))
    inputs, oracles = ready.shaped[key]
    kept = subject.inputs
    subject.inputs = inputs
    try:
        yield oracles
    finally:
        subject.inputs = kept


def _oracles_on(oracles: Oracles, inputs, workload: Workload) -> Oracles:
    """The case's oracles on other inputs: the same models and adapters, empty output caches (the math
    oracle's parsed adapter files are shared: they do not depend on the inputs)."""
    made: dict[int, object] = {}

    def on(oracle):
        if id(oracle) not in made:  # the fp32 logic pair may be the case's own pair: one copy each
            made[id(oracle)] = replace(
                oracle, inputs=inputs, workload=workload, _logits={}, _tokens={}, _gen_logits={}
            )
        return made[id(oracle)]

    return Oracles(
        on(oracles.reference), on(oracles.math), on(oracles.logic_reference), on(oracles.logic_math)
    )
