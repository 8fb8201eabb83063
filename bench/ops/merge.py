"""Merging the adapter into the base weights and back: what users reach for beside hotswapping.

transformers' adapter integration has no merge API, so these are the layer calls PEFT's own
LoraModel.merge_adapter / unmerge_adapter / merge_and_unload make, on every LoRA layer of the model.
Each must leave the output of the unmerged adapter (within the precision's tolerance): the step's check call
compares it with the fresh reference and the math oracle of the same adapter state.
"""

from __future__ import annotations

from bench.ops.base import Op, Walk
from bench.results.verdict import find_known, outcome


def tuner_layers(model) -> list[tuple[str, object]]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]


def _check_mergeable(walk: Walk, step) -> None:
    if not walk.slots and step.expect.raises is None:
        raise walk.fail(step, f"{step.op} needs a loaded adapter")
    if any(a.modules_to_save for a in walk.scenario.adapters):
        # modules_to_save copies are wrappers, not LoRA layers: these layer calls do not merge them.
        raise walk.fail(step, f"{step.op} with an adapter that has modules_to_save is not supported")


class _EachLayer(Op):
    """One call on every LoRA layer; the expected state does not change (the output must not either)."""

    changes_state = True
    # Merged or not, the output must stay the adapter's: no new state to tell apart (matches_reference
    # against the same reference is the check; a doubled or forgotten delta fails it).
    changes_output = False
    method: str  # the BaseTunerLayer method peft's model-level function calls on each layer

    def check(self, walk: Walk, step):
        _check_mergeable(walk, step)

    def transition(self, state, step):
        # Merged or unmerged, the active adapters must give the same output, up to the merged weights'
        # rounding in the model's dtype (which an unmerge does not undo).
        from dataclasses import replace

        return replace(state, base_rounded=True)

    def apply(self, subject, step, adapters, locations):
        for _, layer in tuner_layers(subject.model):
            getattr(layer, self.method)()

    def script(self, w, step):
        _carry_merge(w)
        with w.block(f"for _, layer in tuner_layers(model):  # what peft's {self.name}() does"):
            w.emit(f"layer.{self.method}()")


class MergeAdapter(_EachLayer):
    """`layer.merge()` on every LoRA layer (PEFT's `merge_adapter()`): W += scaling * B @ A, adapters kept."""

    name = "merge_adapter"
    method = "merge"


class UnmergeAdapter(_EachLayer):
    """`layer.unmerge()` on every LoRA layer (PEFT's `unmerge_adapter()`): back to the adapter state."""

    name = "unmerge_adapter"
    method = "unmerge"


class MergeAndUnload(Op):
    """Merge every LoRA layer, put its base layer back in its place and drop the adapter config (PEFT's
    `merge_and_unload()`): a plain transformers model with the merged adapter's output."""

    name = "merge_and_unload"
    changes_state = True
    changes_output = False  # a plain model with the merged adapter's output: the same output as before
    own_expectations = frozenset({"plain_model"})

    def check(self, walk: Walk, step):
        _check_mergeable(walk, step)

    def transition(self, state, step):
        from dataclasses import replace

        return replace(state, unloaded=True, base_rounded=True)

    def apply(self, subject, step, adapters, locations):
        merge_and_unload(subject.model)
        return plain_model_report(subject.model)

    def own_outcomes(self, step, result, state, params):
        layers, config = result["lora_layers_left"], result["peft_config_left"]
        return [
            outcome(
                "plain_model",
                "no LoRA layer, no peft_config",
                f"{layers} LoRA layer(s), peft_config {'left' if config else 'gone'}",
                layers == 0 and not config,
                f"merge_and_unload left {layers} LoRA layer(s)"
                + (" and the peft_config" if config else "")
                + ": not the plain model it must return",
                find_known(step.known_failures, "plain_model", params),
            )
        ]

    def script(self, w, step):
        _carry_merge(w)
        w.emit("merge_and_unload(model)  # what peft's merge_and_unload() does, in place")


def _carry_merge(w) -> None:
    # The suite's own functions, carried verbatim, so the script merges exactly as the run did.
    w.carry(tuner_layers, merge_and_unload)


def merge_and_unload(model) -> None:
    for name, layer in tuner_layers(model):
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.get_base_layer())
    # transformers reads these to decide whether the model holds adapters.
    if hasattr(model, "peft_config"):
        del model.peft_config
    model._hf_peft_config_loaded = False


def plain_model_report(model) -> dict[str, int | bool]:
    """What merge_and_unload left of the adapters: a plain model has no LoRA layer and no peft_config."""
    return {
        "lora_layers_left": len(tuner_layers(model)),
        "peft_config_left": bool(getattr(model, "peft_config", None)),
    }
