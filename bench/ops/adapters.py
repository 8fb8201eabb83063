"""The adapter API of the Transformers PEFT guide: add, load (and hotswap), set, enable, disable, delete."""

from __future__ import annotations

from collections import Counter

from bench.engine import rng
from bench.engine.hotswap import lora_storage, moved_by_swap
from bench.engine.sources.adapters import peft_config
from bench.ops.base import Op, ParseContext, Walk, common_args, read_adapter, read_name
from bench.results.verdict import find_known, outcome
from bench.spec.state import AdapterState


class AddAdapter(Op):
    """`model.add_adapter(LoraConfig(...), adapter_name=name)`: LoRA's default init, B = 0."""

    name = "add_adapter"
    fields = frozenset({"adapter", "name"})
    changes_state = True
    adds_adapter = True

    def parse(self, t, ctx: ParseContext):
        adapter = read_adapter(t, ctx)
        return {"adapter": adapter, "name": read_name(t) or adapter}

    def check(self, walk: Walk, step):
        if step.hotswap:
            raise walk.fail(step, "hotswap applies to load_adapter only")
        _check_new_slot(walk, step)

    def transition(self, state: AdapterState, step):
        return state.add(step.name, step.adapter, added=True)

    def args(self, step):
        return common_args(step)

    def apply(self, subject, step, adapters, locations):
        spec = adapters[step.adapter]
        # LoRA's own init of A draws from the global generator (B = 0 hides it until training): reseeded
        # with the spec's seed, so what a later train step starts from depends on nothing that ran before.
        with rng.seeded(spec.seed, subject.device):
            subject.model.add_adapter(peft_config(spec), adapter_name=step.name)
        subject.path.after_first_load(subject)

    def script(self, w, step):
        seed = next(a.seed for a in w.case.scenario.adapters if a.key == step.adapter)
        with w.block("with torch.random.fork_rng(devices=[]):"):
            w.emit(
                f"torch.manual_seed({seed!r})  # LoRA's init of A draws from it: seeded as the harness does"
            )
            w.emit(f"model.add_adapter(LORA_CONFIGS[{step.adapter!r}](), adapter_name={step.name!r})")
        w.path.script_after_first_load(w)


class LoadAdapter(Op):
    """`model.load_adapter(path, adapter_name=name)`; with `hotswap = true`, the case's hotswap path."""

    name = "load_adapter"
    fields = frozenset({"adapter", "name", "hotswap"})
    changes_state = True
    moves_adapter = True
    adds_adapter = True
    own_expectations = frozenset({"swap_in_place"})

    def parse(self, t, ctx: ParseContext):
        adapter = read_adapter(t, ctx)
        hotswap = t.get("hotswap", (bool, str), False)
        if isinstance(hotswap, str) and hotswap != "auto":
            raise t.error(
                "hotswap",
                f'expected true, false or "auto" (no argument: the library decides), got {hotswap!r}',
            )
        auto = hotswap == "auto"
        return {
            "adapter": adapter,
            "name": read_name(t) or adapter,
            "hotswap": hotswap is True,
            "auto_hotswap": auto,
        }

    def check(self, walk: Walk, step):
        if step.auto_hotswap:
            _check_auto(walk, step)
            if step.name in walk.slots:
                return  # transformers hotswaps into the existing slot (the walk checked it was enabled)
        if not step.hotswap:
            _check_new_slot(walk, step)
            return
        expects_error = step.expect.raises is not None
        if step.name not in walk.slots and not expects_error:
            raise walk.fail(
                step,
                f"hotswap into {step.name!r}, but no adapter of that name is loaded at this point "
                f"(loaded: {walk.loaded()})",
            )
        s = walk.scenario
        kind = s.adapter(step.adapter).type if step.adapter in {a.key for a in s.adapters} else "lora"
        if kind != "lora" and not expects_error:
            raise walk.fail(
                step,
                f"hotswap is LoRA's only: {step.adapter!r} is {kind} (transformers refuses it with ValueError; "
                "set expect.raises = 'ValueError' to check that refusal)",
            )

    def transition(self, state: AdapterState, step):
        # hotswap = "auto" after enable_peft_hotswap: the documented default swaps into an existing slot.
        if step.hotswap or (step.auto_hotswap and state.slot(step.name) is not None):
            return state.hotswap(step.name, step.adapter)
        return state.add(step.name, step.adapter, added=False)

    def args(self, step):
        hotswap = {"hotswap": True} if step.hotswap else {"hotswap": "auto"} if step.auto_hotswap else {}
        return {**common_args(step), **hotswap}

    def apply(self, subject, step, adapters, locations):
        """A hotswap returns the slot's LoRA weights before and after it (bench.engine.hotswap.lora_storage)."""
        location = locations[step.adapter]
        swaps = step.hotswap or (step.auto_hotswap and step.name in getattr(subject.model, "peft_config", {}))
        before = lora_storage(subject.model, step.name) if swaps else None
        if step.hotswap:
            subject.path.swap(subject, location, step.name)
        else:
            # No hotswap argument: the library's default ("auto" in transformers) decides.
            subject.model.load_adapter(location, adapter_name=step.name)
            subject.path.after_first_load(subject)
        return (before, lora_storage(subject.model, step.name)) if swaps else None

    def own_outcomes(self, step, result, state, params):
        if result is None:
            return []
        before, after = result
        moved = moved_by_swap(before, after)
        held = bool(before) and not moved
        kinds = Counter(kind for _, kind in moved)
        listed = ", ".join(f"{key} ({kind})" for key, kind in moved[:4])
        what = (
            f"rebound {len(moved)} of {len(before)} LoRA weights "
            f"({', '.join(f'{n} {kind}' for kind, n in sorted(kinds.items()))}) instead of copying into them: "
            + listed
            + (f" and {len(moved) - 4} more" if len(moved) > 4 else "")
            if before
            else "found no LoRA weight of the slot before the swap"
        )
        return [
            outcome(
                "swap_in_place",
                f"{len(before)} LoRA weights kept (same objects and storage)",
                f"{len(before) - len(moved)} of {len(before)} kept",
                held,
                f"the hotswap {what} (a compiled or CUDA-graph model reads the old ones)",
                find_known(step.known_failures, "swap_in_place", params),
                measured=len(moved),
            )
        ]

    def script(self, w, step):
        location = f"ADAPTERS[{step.adapter!r}]"
        if step.hotswap or step.auto_hotswap:
            # The slot's weights before the swap, for the swap_in_place check (the same functions as the run).
            w.carry(lora_storage, moved_by_swap)
            w.emit(f"swap_before = lora_storage(model, {step.name!r})")
        if step.hotswap:
            w.path.script_swap(w, location, step.name)
        else:
            note = "  # hotswap left at its default" if step.auto_hotswap else ""
            w.emit(f"model.load_adapter({location}, adapter_name={step.name!r}){note}")
            w.path.script_after_first_load(w)

    def script_check(self, w, expectation, step, state, what):
        if expectation != "swap_in_place":
            return False
        w.emit(f"moved = moved_by_swap(swap_before, lora_storage(model, {step.name!r}))")
        with w.block("if moved or not swap_before:"):
            w.emit(
                f"reproduced(f'{what}: the hotswap rebound {{len(moved)}} of {{len(swap_before)}} LoRA weights "
                "instead of copying into them: ' + ', '.join(f'{k} ({kind})' for k, kind in moved[:4]))"
            )
        return True


def _check_auto(walk: Walk, step) -> None:
    """hotswap = "auto" is transformers' default after enable_peft_hotswap; PEFT's path has no such default."""
    if step.hotswap:
        raise walk.fail(step, 'hotswap = "auto" and hotswap = true are one field')
    if not walk.hotswap_enabled:
        raise walk.fail(step, 'hotswap = "auto" hotswaps only after enable_hotswap; add that step first')
    paths = walk.scenario.matrix.hotswap_path
    if tuple(paths) != ("transformers",):
        raise walk.fail(
            step,
            'hotswap = "auto" is transformers\' default (enable_peft_hotswap then load_adapter): '
            f"the matrix must run the transformers path only, not {', '.join(paths)}",
        )


def _check_new_slot(walk: Walk, step) -> None:
    expects_error = step.expect.raises is not None
    if step.name in walk.slots and not expects_error:
        raise walk.fail(
            step,
            f"an adapter named {step.name!r} is already loaded; use hotswap = true, another "
            "name, or expect.raises = 'ValueError'",
        )
    if not expects_error:
        walk.any_loaded = True


class SetAdapter(Op):
    """`model.set_adapter(name or [names])`."""

    name = "set_adapter"
    fields = frozenset({"names"})
    changes_state = True

    def parse(self, t, ctx):
        names = t.str_list("names", ())
        if not names:
            raise t.error("names", "required: the adapter name(s) to activate")
        return {"names": names}

    def check(self, walk: Walk, step):
        missing = [n for n in step.names if n not in walk.slots]
        if missing and step.expect.raises is None:
            raise walk.fail(
                step,
                f"set_adapter names {', '.join(missing)}, not loaded at this point (loaded: {walk.loaded()})",
            )

    def transition(self, state, step):
        return state.set_active(step.names)

    def args(self, step):
        return {"names": list(step.names)}

    def apply(self, subject, step, adapters, locations):
        subject.model.set_adapter(_names_arg(step))

    def script(self, w, step):
        w.emit(f"model.set_adapter({_names_arg(step)!r})")


def _names_arg(step):
    return list(step.names) if len(step.names) > 1 else step.names[0]


class _Toggle(Op):
    changes_state = True
    enabled: bool

    def check(self, walk: Walk, step):
        if not walk.slots and step.expect.raises is None:
            raise walk.fail(step, f"{step.op} needs a loaded adapter")

    def transition(self, state, step):
        return state.set_enabled(self.enabled)

    def apply(self, subject, step, adapters, locations):
        getattr(subject.model, self.name)()

    def script(self, w, step):
        w.emit(f"model.{self.name}()")


class EnableAdapters(_Toggle):
    """`model.enable_adapters()`."""

    name = "enable_adapters"
    enabled = True


class DisableAdapters(_Toggle):
    """`model.disable_adapters()`: exactly the base output, the adapters stay loaded."""

    name = "disable_adapters"
    enabled = False


class DeleteAdapter(Op):
    """`model.delete_adapter(name)`."""

    name = "delete_adapter"
    fields = frozenset({"name"})
    changes_state = True

    def parse(self, t, ctx):
        return {"name": read_name(t, required="which adapter_name to delete")}

    def check(self, walk: Walk, step):
        expects_error = step.expect.raises is not None
        if step.name not in walk.slots and not expects_error:
            raise walk.fail(
                step, f"delete_adapter {step.name!r}, not loaded at this point (loaded: {walk.loaded()})"
            )

    def transition(self, state, step):
        return state.delete(step.name)

    def args(self, step):
        return common_args(step)

    def apply(self, subject, step, adapters, locations):
        subject.model.delete_adapter(step.name)

    def script(self, w, step):
        w.emit(f"model.delete_adapter({step.name!r})")
