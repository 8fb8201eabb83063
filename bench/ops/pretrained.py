"""`AutoModelForCausalLM.from_pretrained(<adapter folder>)`: a new model, its base found through
adapter_config.json, the adapter loaded on it."""

from __future__ import annotations

from bench.engine.model import load_model
from bench.ops.base import PRETRAINED_SLOT, Op, Walk, common_args, read_adapter
from bench.spec.state import AdapterState


class LoadPretrained(Op):
    name = "load_pretrained"
    fields = frozenset({"adapter"})
    changes_state = True
    moves_adapter = True

    def contrast_state(self, previous):
        # A new model: what it must be told apart from is its own base without the adapter, not the
        # previous model (which, after save_adapter, holds the same weights).
        return AdapterState()

    def parse(self, t, ctx):
        return {"adapter": read_adapter(t, ctx)}

    def check(self, walk: Walk, step):
        if walk.compiled:
            raise walk.fail(step, "load_pretrained makes a new model: it must come before compile")
        walk.any_loaded = True

    def transition(self, state, step):
        return AdapterState.loaded_pretrained(step.adapter, PRETRAINED_SLOT)

    def args(self, step):
        return common_args(step)

    def apply(self, subject, step, adapters, locations):
        subject.model = load_model(
            locations[step.adapter],
            subject.precision,
            subject.device,
            quant=subject.quant,
            trust_remote_code=subject.trust_remote_code,
            allow_pickle=subject.allow_pickle,
        )
        subject.compiled = None
        subject.loaded_any = True

    def script(self, w, step):
        w.emit("# AutoModelForCausalLM.from_pretrained(<adapter folder>): a new model; transformers finds")
        w.emit(f"# the base through adapter_config.json and loads the adapter on it as {PRETRAINED_SLOT!r}")
        w.emit(f"model = load_model(ADAPTERS[{step.adapter!r}])")
        w.emit("compiled = None")
        w.compiled = False
        w.loaded_any = True
