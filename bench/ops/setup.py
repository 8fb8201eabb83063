"""Setting the model up: compiled hotswapping enabled, and compilation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.engine.subject import compile_kwargs, generate_compile_kwargs
from bench.ops.base import Op, Walk
from bench.spec.table import MAX_RANK

if TYPE_CHECKING:
    pass


class EnableHotswap(Op):
    """transformers path: `enable_peft_hotswap(target_rank=...)`; peft path: `prepare_model_for_compiled_hotswap`
    right after the first load."""

    name = "enable_hotswap"
    fields = frozenset({"target_rank"})

    def parse(self, t, ctx):
        target_rank = t.int_in("target_rank", None, 1, MAX_RANK)
        if target_rank is None:
            raise t.error("target_rank", "required: the largest rank any swapped-in adapter will have")
        return {"target_rank": target_rank}

    def check(self, walk: Walk, step):
        expects_error = step.expect.raises is not None
        if walk.hotswap_enabled:
            raise walk.fail(step, "hotswap is already enabled")
        if walk.any_loaded and not expects_error:
            raise walk.fail(
                step,
                "enable_hotswap must come before the first adapter is loaded "
                "(transformers raises RuntimeError after it); set expect.raises to test that",
            )
        if walk.compiled and not expects_error:
            raise walk.fail(step, "enable_hotswap must come before compile")
        walk.hotswap_enabled = not expects_error

    def args(self, step):
        return {"target_rank": step.target_rank}

    def apply(self, subject, step, adapters, locations):
        subject.path.enable(subject, step.target_rank)

    def script(self, w, step):
        w.path.script_enable(w, step.target_rank)


class Compile(Op):
    """Forward workloads: `torch.compile(model, ...)`; generate workloads: transformers' own compile path."""

    name = "compile"
    compiles = True
    fields = frozenset({"inplace"})

    def parse(self, t, ctx):
        return {"inplace": t.get("inplace", bool, False)}

    def args(self, step):
        return {"inplace": True} if step.inplace else {}

    def check(self, walk: Walk, step):
        if step.inplace and walk.scenario.workload.kind == "generate":
            raise walk.fail(
                step, "inplace = true applies to forward workloads (generate uses transformers' compile path)"
            )
        if walk.compiled:
            raise walk.fail(step, "the model is already compiled (one compile step per scenario)")
        if not any(c.enabled for c in walk.scenario.matrix.compile):
            raise walk.fail(
                step, "a compile step needs a compile backend in matrix.compile other than 'none'"
            )
        walk.compiled = True

    def skip_note(self, compile_setting):
        return None if compile_setting.enabled else STAYS_EAGER

    def apply(self, subject, step, adapters, locations):
        subject.compile(inplace=step.inplace)

    def script(self, w, step):
        s = w.case.compile
        if not s.enabled:
            w.emit(f"pass  # {STAYS_EAGER}")
        elif w.generate:
            w.emit("# transformers' compile path for generate: a static cache and its own torch.compile")
            w.emit(f"cc = CompileConfig({_call_args(generate_compile_kwargs(s))})")
            w.emit("cc._compile_all_devices = True  # transformers compiles only on accelerators unless told")
            w.emit("model.generation_config.compile_config = cc")
            w.emit('model.generation_config.cache_implementation = "static"')
            w.generate_compiled = True
        else:
            kwargs = _call_args(compile_kwargs(s))
            if step.inplace:
                w.emit(f"model.compile({kwargs})  # in place: the module itself runs compiled")
                w.emit("compiled = model")
            else:
                w.emit(f"compiled = torch.compile(model, {kwargs})")
            w.compiled = True


STAYS_EAGER = "compile setting 'none': the model stays eager"


def _call_args(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
