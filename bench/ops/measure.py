"""The measured model calls: the first call timed alone, then warm-up and timed rounds (bench.worker.execute)."""

from __future__ import annotations

from bench.ops.base import Op


class Forward(Op):
    """A forward pass of the workload's batch; its logits are checked against the reference."""

    name = "forward"
    call = "forward"

    def script(self, w, step):
        pass  # the measured call is the step: the writer emits it with the model calls


class Generate(Op):
    """Greedy generation of the workload's new tokens; its tokens are checked against the reference."""

    name = "generate"
    call = "generate"

    def script(self, w, step):
        pass
