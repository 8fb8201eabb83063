"""The measured model calls: the first call timed alone, then warm-up and timed rounds (bench.worker.execute)."""

from __future__ import annotations

from bench.ops.base import Op, Walk
from bench.spec.shapes import step_workload
from bench.spec.table import MAX_BATCH_SIZE, MAX_BATCH_TOKENS, MAX_SEQ_LEN


class Forward(Op):
    """A forward pass of the workload's batch; its logits are checked against the reference. With
    `batch_size` / `seq_len` the step runs on inputs of that shape instead (the workload's seed), and both
    oracles compute its reference on the same inputs (bench.worker.shapes)."""

    name = "forward"
    call = "forward"
    fields = frozenset({"batch_size", "seq_len"})

    def parse(self, t, ctx):
        return {
            "batch_size": t.int_in("batch_size", None, 1, MAX_BATCH_SIZE),
            "seq_len": t.int_in("seq_len", None, 1, MAX_SEQ_LEN),
        }

    def check(self, walk: Walk, step):
        if step.batch_size is None and step.seq_len is None:
            return
        w = walk.scenario.workload
        batch, length = step.batch_size or w.batch_size, step.seq_len or w.seq_len
        if (batch, length) == (w.batch_size, w.seq_len):
            raise walk.fail(
                step,
                f"batch_size / seq_len give the workload's own shape ({batch} x {length}): leave them out, "
                "or give another shape",
            )
        if batch * length > MAX_BATCH_TOKENS:
            raise walk.fail(
                step, f"a batch of {batch} x {length} tokens is more than {MAX_BATCH_TOKENS} (a typo?)"
            )

    def args(self, step):
        return {k: getattr(step, k) for k in ("batch_size", "seq_len") if getattr(step, k) is not None}

    def script(self, w, step):
        # the measured call is the step: the writer emits it with the model calls; a step on its own shape
        # draws its inputs first, as the harness does (bench.engine.model.make_inputs), and the reference in
        # the script's check reads the same INPUTS
        shaped = step_workload(step, w.case.scenario.workload)
        if shaped is None:
            return
        w.emit(f"workload_inputs = INPUTS  # step {step.index} runs on its own shape")
        w.emit(f"gen = torch.Generator().manual_seed({shaped.seed!r})")
        w.emit(f"ids = torch.randint(3, vocab, ({shaped.batch_size!r}, {shaped.seq_len!r}), generator=gen)")
        w.emit("INPUTS = {'input_ids': ids.to(DEVICE), 'attention_mask': torch.ones_like(ids).to(DEVICE)}")

    def script_after(self, w, step):
        if step_workload(step, w.case.scenario.workload) is not None:
            w.emit("INPUTS = workload_inputs  # the later steps run on the workload's inputs")


class Generate(Op):
    """Greedy generation of the workload's new tokens; its tokens are checked against the reference."""

    name = "generate"
    call = "generate"

    def check(self, walk: Walk, step):
        if walk.scenario.workload.kind != "generate":
            # The references generate only for a generate workload (its new_tokens, greedy): a forward one
            # has no tokens to check these against.
            raise walk.fail(step, 'generate needs [workload] kind = "generate" (with its new_tokens)')

    def script(self, w, step):
        pass
