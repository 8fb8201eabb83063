"""The adapter state a correct library must be in after each step: pure transitions, no torch.

The reference for a step is a freshly loaded model holding exactly this state, so this is where the
suite's understanding of the Transformers PEFT API is written down. Where a library disagrees with it,
the output check says so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Slot:
    name: str  # adapter_name in the model
    adapter: str  # key of the AdapterSpec whose weights it holds
    added: bool  # True: add_adapter (fresh LoRA init, B = 0), False: weights loaded from the adapter's files
    trained: bool = False  # optimizer steps changed its weights: they exist only in this model until saved


@dataclass(frozen=True)
class AdapterState:
    slots: tuple[Slot, ...] = ()
    active: tuple[str, ...] = ()
    enabled: bool = True
    base_modified: bool = False  # full fine-tuning changed the base weights
    # merge_and_unload: the effective adapters are merged into the base weights and the LoRA layers removed.
    # The output is still theirs (the key is unchanged); no adapter op can follow (the loader refuses it).
    unloaded: bool = False
    # merge_adapter wrote W + scaling * B @ A into the base weights in the model's dtype (and unmerge_adapter
    # subtracts it again, rounding a second time): from then on the output is the adapter's only up to that
    # rounding, so the exact rule of an eager-family backend no longer holds (bench.spec.precision).
    base_rounded: bool = False

    @property
    def verifiable(self) -> bool:
        """False when the output depends on weights no file holds (trained, not yet saved)."""
        return not self.base_modified and not any(s.trained for s in self.effective)

    def slot(self, name: str) -> Slot | None:
        return next((s for s in self.slots if s.name == name), None)

    @property
    def effective(self) -> tuple[Slot, ...]:
        """The slots that shape the output: none when adapters are disabled."""
        if not self.enabled:
            return ()
        return tuple(s for s in self.slots if s.name in self.active)

    @property
    def key(self) -> str:
        """What the output depends on; equal keys share one reference computation."""
        eff = self.effective
        if not eff:
            return "base"
        return (
            " ".join(f"{s.name}={'added:' if s.added else ''}{s.adapter}" for s in eff)
            + f" active=[{','.join(self.active)}]"
        )

    @property
    def description(self) -> str:
        if not self.slots:
            return "no adapters (base)"
        slots = ", ".join(f"{s.name}={'added:' if s.added else ''}{s.adapter}" for s in self.slots)
        where = (
            "merged into the base, unloaded" if self.unloaded else ("enabled" if self.enabled else "disabled")
        )
        return f"{slots}; active=[{','.join(self.active)}]; {where}"

    # Transitions, as the Transformers PEFT guide documents them.
    def add(self, name: str, adapter: str, *, added: bool) -> AdapterState:
        """add_adapter / load_adapter activate the new adapter and keep the others."""
        return replace(self, slots=self.slots + (Slot(name, adapter, added),), active=(name,))

    def hotswap(self, name: str, adapter: str) -> AdapterState:
        """The slot now holds the new adapter's weights, rank and scaling; activation is unchanged."""
        slots = tuple(Slot(name, adapter, False) if s.name == name else s for s in self.slots)
        return replace(self, slots=slots)

    def set_active(self, names: tuple[str, ...]) -> AdapterState:
        """set_adapter changes which adapters are active; it does not undo disable_adapters (separate toggles)."""
        return replace(self, active=names)

    def set_enabled(self, enabled: bool) -> AdapterState:
        return replace(self, enabled=enabled)

    def trained(self, *, full: bool) -> AdapterState:
        if full:
            return replace(self, base_modified=True)
        slots = tuple(replace(s, trained=True) if s in self.effective else s for s in self.slots)
        return replace(self, slots=slots)

    def saved(self, key: str) -> AdapterState:
        """save_pretrained writes the active adapter; that slot now holds exactly the saved file's weights."""
        active = [s for s in self.slots if s.name in self.active]
        if len(active) != 1:
            return self  # transformers refuses to save several active adapters (ValueError)
        slots = tuple(Slot(s.name, key, False) if s == active[0] else s for s in self.slots)
        return replace(self, slots=slots)

    @classmethod
    def loaded_pretrained(cls, key: str, slot: str) -> AdapterState:
        """from_pretrained(<adapter folder>): a new model holding that adapter in `slot` ("default")."""
        return cls(slots=(Slot(slot, key, False),), active=(slot,))

    def repeated(self, mode: str, base: str, cycle: tuple[str, ...], count: int) -> AdapterState:
        if mode == "side_by_side":
            state = self
            for i in range(count):
                state = state.add(f"{base}{i}", cycle[i % len(cycle)], added=False)
            return state
        if mode == "hotswap":
            return self.hotswap(base, cycle[(count - 1) % len(cycle)])
        # load_delete: each load activates the new adapter and each delete removes it again
        return self.add(base, cycle[(count - 1) % len(cycle)], added=False).delete(base)

    def delete(self, name: str) -> AdapterState:
        """Deleting the only active adapter activates the first one left (peft warns "Setting active adapter
        to ..."); with none left the model gives the base output."""
        slots = tuple(s for s in self.slots if s.name != name)
        active = tuple(a for a in self.active if a != name)
        if not active and slots:
            active = (slots[0].name,)
        return AdapterState(slots, active, self.enabled)
