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


@dataclass(frozen=True)
class AdapterState:
    slots: tuple[Slot, ...] = ()
    active: tuple[str, ...] = ()
    enabled: bool = True

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
        return f"{slots}; active=[{','.join(self.active)}]; {'enabled' if self.enabled else 'disabled'}"

    # Transitions, as the Transformers PEFT guide documents them.
    def add(self, name: str, adapter: str, *, added: bool) -> AdapterState:
        """add_adapter / load_adapter activate the new adapter and keep the others."""
        return AdapterState(self.slots + (Slot(name, adapter, added),), (name,), self.enabled)

    def hotswap(self, name: str, adapter: str) -> AdapterState:
        """The slot now holds the new adapter's weights, rank and scaling; activation is unchanged."""
        slots = tuple(Slot(name, adapter, False) if s.name == name else s for s in self.slots)
        return replace(self, slots=slots)

    def set_active(self, names: tuple[str, ...]) -> AdapterState:
        """set_adapter changes which adapters are active; it does not undo disable_adapters (separate toggles)."""
        return replace(self, active=names)

    def set_enabled(self, enabled: bool) -> AdapterState:
        return replace(self, enabled=enabled)

    def delete(self, name: str) -> AdapterState:
        return AdapterState(
            tuple(s for s in self.slots if s.name != name),
            tuple(a for a in self.active if a != name),
            self.enabled,
        )
