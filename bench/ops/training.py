"""Training the active adapters (or, as the baseline, every weight), and saving what was trained."""

from __future__ import annotations

from bench.engine.model import vocab_size_of
from bench.engine.train import (
    LOSS_MARGIN_REL,
    TRAIN_BATCHES,
    fit,
    train,
    train_batches,
    trainable_parameters,
    trained_enough,
)
from bench.ops.base import Op, Walk
from bench.ops.script_text import ident
from bench.ops.templates import TRAIN
from bench.results.verdict import find_known, outcome
from bench.spec.table import checked_name


class Train(Op):
    """A real AdamW loop on synthetic token batches (bench.engine.train): the active LoRA weights (and their
    modules_to_save copies), or every parameter with `full = true`."""

    name = "train"
    own_expectations = frozenset({"loss_decreases"})
    fields = frozenset({"steps", "learning_rate", "full"})
    changes_state = True
    result_field = "train"  # StepRecord.train: the TrainStats of the loop

    @property
    def checks_output(self) -> bool:
        return False  # no file holds the trained weights: nothing to check against until save_adapter

    def parse(self, t, ctx):
        lr = t.get("learning_rate", float, 1e-3)
        if not 0 < lr <= 10:
            raise t.error("learning_rate", f"must be in (0, 10], got {lr}")
        return {
            "train_steps": t.int_in("steps", 10, 1, 100_000),
            "learning_rate": lr,
            "full": t.get("full", bool, False),
        }

    def check(self, walk: Walk, step):
        if step.full and walk.slots:
            raise walk.fail(
                step, "full fine-tuning (full = true) is the no-adapter baseline: load no adapter before it"
            )
        if not step.full and not walk.slots and step.expect.raises is None:
            raise walk.fail(
                step, "train needs an adapter (add_adapter first), or full = true for full fine-tuning"
            )
        if walk.scenario.workload.seq_len < 2:
            # The causal LM loss predicts each next token: one token has none, and its loss is NaN.
            raise walk.fail(
                step, "train needs the workload's seq_len of at least 2 (one token has no next one)"
            )

    def transition(self, state, step):
        return state.trained(full=step.full)

    def args(self, step):
        return {"steps": step.train_steps, "learning_rate": step.learning_rate, "full": step.full}

    def apply(self, subject, step, adapters, locations):
        return train(
            subject.model,
            subject.workload,
            vocab_size_of(subject.model),
            subject.device,
            subject.clock,
            steps=step.train_steps,
            learning_rate=step.learning_rate,
            full=step.full,
        )

    def own_outcomes(self, step, result, state, params):
        before, after = result.fixed_batch_loss_before, result.fixed_batch_loss_after
        return [
            outcome(
                "loss_decreases",
                f"< {(1 - LOSS_MARGIN_REL) * before:.4g} (fixed batch, {LOSS_MARGIN_REL:.0%} below {before:.4g})",
                f"{after:.4g}",
                trained_enough(before, after),
                f"the fixed batch's loss went from {before:.4g} to {after:.4g} in {result.steps} steps, "
                f"not {LOSS_MARGIN_REL:.0%} lower: the optimizer did not train the weights",
                find_known(step.known_failures, "loss_decreases", params),
            )
        ]

    def script(self, w, step):
        # The harness's own loop, carried verbatim; TRAIN is the script's wrapper around it.
        w.carry(f"TRAIN_BATCHES = {TRAIN_BATCHES!r}", trainable_parameters, train_batches, fit, TRAIN)
        wl = w.case.scenario.workload
        w.emit(
            f"losses = train(model, steps={step.train_steps!r}, learning_rate={step.learning_rate!r}, "
            f"full={step.full!r}, shape=({wl.batch_size!r}, {wl.seq_len!r}))"
        )

    def script_check(self, w, expectation, step, state, what):
        with w.block("if not losses[-1] < losses[0]:"):
            w.emit(
                f"reproduced(f'{what}: the loss did not decrease: {{losses[0]:.4g}} -> {{losses[-1]:.4g}} in "
                f"{step.train_steps} steps')"
            )
        return True


class SaveAdapter(Op):
    """`model.save_pretrained(folder)` of the active adapter; later steps use the folder as adapter `as`."""

    name = "save_adapter"
    fields = frozenset({"as"})
    changes_state = True
    changes_output = False  # the same weights, now also a folder: nothing for the output to show

    def parse(self, t, ctx):
        key = checked_name(t, "as", t.get("as", str))
        if ctx.known(key):
            raise t.error("as", f"adapter key {key!r} is already defined; pick a new one")
        ctx.saved.add(key)
        return {"save_as": key}

    def check(self, walk: Walk, step):
        if not walk.slots and step.expect.raises is None:
            raise walk.fail(step, "save_adapter needs a loaded adapter (it saves the active one)")

    def transition(self, state, step):
        return state.saved(step.save_as)

    def args(self, step):
        return {"as": step.save_as}

    def apply(self, subject, step, adapters, locations):
        if subject.work_dir is None:
            raise RuntimeError("save_adapter needs a work folder for the case")
        folder = subject.work_dir / step.save_as
        subject.model.save_pretrained(folder)
        locations[step.save_as] = str(folder)

    def script(self, w, step):
        w.emit(f"ADAPTERS[{step.save_as!r}] = f'{{work}}/saved/{ident(step.save_as)}'")
        w.emit(f"model.save_pretrained(ADAPTERS[{step.save_as!r}])  # the active adapter")
