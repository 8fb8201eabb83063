"""How a serve step switches between adapters: one strategy object per matrix value of `strategy`.

Each strategy sets the model up (loads adapters, prepares hotswapping, compiles when the case compiles),
makes the batch's adapters active (`activate`, timed as the switch), and makes the model call (`call`).
Only the transformers/PEFT APIs a user of the guide would call; nothing here checks or times anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from bench.engine.hotswap import PATHS

HOTSWAP_SLOT = "default"  # the hotswap strategy's one slot


@dataclass
class ServeContext:
    subject: Any  # bench.engine.subject.Subject: model, compile setting, workload, device
    locations: dict[str, str]  # adapter key -> saved adapter folder
    keys: tuple[str, ...]  # the adapters the stream asks for
    first: str  # the adapter of the stream's first request
    max_rank: int
    model: Any = None  # what `call` runs (the transformers model, or the PeftModel of mixed_batch)
    current: str | None = None
    notes: list[str] = field(default_factory=list)


class Strategy:
    name: ClassVar[str]
    batches: ClassVar[bool] = False  # serves requests of different adapters in one model call

    def setup(self, ctx: ServeContext) -> None:
        raise NotImplementedError

    def activate(self, ctx: ServeContext, keys: list[str]) -> bool:
        """Make `keys` (one per request of the batch) servable; True when the model's adapters changed."""
        raise NotImplementedError

    def call_kwargs(self, ctx: ServeContext, keys: list[str]) -> dict[str, Any]:
        return {}


def _compile(ctx: ServeContext) -> None:
    """Compile the model `call` runs, as the scenario's compile setting says (the compile op's own call)."""
    subject = ctx.subject
    subject.model = ctx.model
    if subject.compile_setting.enabled:
        # torch.compile(model) as a compile step with its defaults does it (not the in-place model.compile()).
        subject.compile()


class Hotswap(Strategy):
    """One slot; each switch swaps the new adapter's weights into it (the case's hotswap path)."""

    name = "hotswap"

    def setup(self, ctx):
        subject = ctx.subject
        path = PATHS[subject.hotswap_path]
        path.enable(subject, ctx.max_rank)
        subject.model.load_adapter(ctx.locations[ctx.first], adapter_name=HOTSWAP_SLOT)
        path.after_first_load(subject)
        ctx.model = subject.model
        ctx.current = ctx.first
        _compile(ctx)

    def activate(self, ctx, keys):
        if keys[0] == ctx.current:
            return False
        PATHS[ctx.subject.hotswap_path].swap(ctx.subject, ctx.locations[keys[0]], HOTSWAP_SLOT)
        ctx.current = keys[0]
        return True


class SideBySide(Strategy):
    """Every adapter loaded under its own name; `set_adapter` per switch."""

    name = "side_by_side"

    def setup(self, ctx):
        model = ctx.subject.model
        for key in ctx.keys:
            model.load_adapter(ctx.locations[key], adapter_name=key)
        model.set_adapter(ctx.first)
        ctx.model = model
        ctx.current = ctx.first
        _compile(ctx)

    def activate(self, ctx, keys):
        if keys[0] == ctx.current:
            return False
        ctx.model.set_adapter(keys[0])
        ctx.current = keys[0]
        return True


class Reload(Strategy):
    """One adapter loaded at a time: `delete_adapter` the old one, `load_adapter` the new one."""

    name = "reload"

    def setup(self, ctx):
        model = ctx.subject.model
        model.load_adapter(ctx.locations[ctx.first], adapter_name=ctx.first)
        ctx.model = model
        ctx.current = ctx.first
        _compile(ctx)

    def activate(self, ctx, keys):
        if keys[0] == ctx.current:
            return False
        ctx.model.delete_adapter(ctx.current)
        ctx.model.load_adapter(ctx.locations[keys[0]], adapter_name=keys[0])
        ctx.current = keys[0]
        return True


class MixedBatch(Strategy):
    """PEFT's mixed-adapter batches: every adapter loaded in a PeftModel, `adapter_names=[...]` per row.
    transformers' integration has no such argument, so this strategy always goes through PEFT."""

    name = "mixed_batch"
    batches = True

    def setup(self, ctx):
        from peft import PeftModel

        model = PeftModel.from_pretrained(
            ctx.subject.model, ctx.locations[ctx.keys[0]], adapter_name=ctx.keys[0]
        )
        for key in ctx.keys[1:]:
            model.load_adapter(ctx.locations[key], adapter_name=key)
        model.eval()
        ctx.model = model
        ctx.notes.append(
            "mixed_batch goes through PEFT's PeftModel (adapter_names=...): transformers has no such call"
        )
        _compile(ctx)

    def activate(self, ctx, keys):
        return False  # nothing to switch: each row names its adapter

    def call_kwargs(self, ctx, keys):
        return {"adapter_names": list(keys)}


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (Hotswap(), SideBySide(), Reload(), MixedBatch())}
