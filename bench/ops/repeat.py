"""`repeat_load`: N loads side by side, N hotswaps into one slot, or N load/delete cycles, RSS after each."""

from __future__ import annotations

from pathlib import Path

from bench.engine.footprint import adapter_file_bytes
from bench.engine.repeat import repeat_load
from bench.ops.base import REPEAT_SLOT, Op, Walk, read_name

REPEAT_MODES = ("side_by_side", "hotswap", "load_delete")


class RepeatLoad(Op):
    name = "repeat_load"
    fields = frozenset({"adapters", "count", "mode", "name"})
    changes_state = True
    result_field = "repeat"  # StepRecord.repeat: the RepeatStats of the loads

    def parse(self, t, ctx):
        name = read_name(t)
        cycle = t.str_list("adapters")
        if not cycle:
            raise t.error("adapters", "needs at least one adapter key")
        for i, key in enumerate(cycle):
            if not ctx.known(key):
                raise t.error(f"adapters[{i}]", f"adapter {key!r} is not defined in [adapters]")
        mode = t.choice("mode", REPEAT_MODES)
        return {"name": name, "cycle": cycle, "mode": mode, "count": t.int_in("count", 5, 1, 1000)}

    def check(self, walk: Walk, step):
        base = step.name or REPEAT_SLOT
        if step.mode == "hotswap" and base not in walk.slots and step.expect.raises is None:
            raise walk.fail(
                step, f"repeat_load mode 'hotswap' swaps into {base!r}, which is not loaded at this point"
            )
        if step.mode == "side_by_side":
            new = {f"{base}{i}" for i in range(step.count)}
            if new & walk.slots:
                raise walk.fail(
                    step, f"repeat_load would reuse adapter names {', '.join(sorted(new & walk.slots))}"
                )
            walk.any_loaded = True
        if step.mode == "load_delete" and base in walk.slots:
            raise walk.fail(step, f"repeat_load mode 'load_delete' loads {base!r}, which is already loaded")

    def transition(self, state, step):
        return state.repeated(step.mode, step.name or REPEAT_SLOT, step.cycle, step.count)

    def args(self, step):
        args = {"name": step.name} if step.name is not None else {}
        return {**args, "mode": step.mode, "count": step.count, "adapters": list(step.cycle)}

    def apply(self, subject, step, adapters, locations):
        base = step.name or REPEAT_SLOT

        def one(i: int) -> None:
            location = locations[step.cycle[i % len(step.cycle)]]
            if step.mode == "side_by_side":
                subject.model.load_adapter(location, adapter_name=f"{base}{i}")
            elif step.mode == "hotswap":
                subject.path.swap(subject, location, base)
            else:
                subject.model.load_adapter(location, adapter_name=base)
                subject.model.delete_adapter(base)

        first = locations[step.cycle[0]]
        size = adapter_file_bytes(first) if Path(first).exists() else None
        return repeat_load(step.mode, step.count, one, subject.clock, subject.device, size)

    def script(self, w, step):
        base = step.name or REPEAT_SLOT
        w.emit(f"cycle = {list(step.cycle)!r}")
        with w.block(f"for i in range({step.count!r}):"):
            w.emit("location = ADAPTERS[cycle[i % len(cycle)]]")
            if step.mode == "side_by_side":
                w.emit(f"model.load_adapter(location, adapter_name=f'{base}{{i}}')")
            elif step.mode == "hotswap":
                w.path.script_swap(w, "location", base)
            else:
                w.emit(f"model.load_adapter(location, adapter_name={base!r})")
                w.emit(f"model.delete_adapter({base!r})")
