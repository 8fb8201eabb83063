"""The model under test and the real API calls each scenario op makes on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.engine.hotswap import PATHS, HotswapPath
from bench.engine.model import Inputs, generate_kwargs
from bench.engine.reference import generated
from bench.spec.schema import CompileSetting, Workload


@dataclass
class Subject:
    model: Any
    device: str
    workload: Workload
    inputs: Inputs
    compile_setting: CompileSetting
    hotswap_path: str
    compiled: Any = None  # torch.compile(model) for forward workloads
    generate_compiled: bool = False  # transformers' own compile path for generate workloads
    compile_unverified: bool = False  # compiled, and no model call has shown a frame compile yet
    pending_target_rank: int | None = None  # peft path: prepare after the first adapter is loaded
    loaded_any: bool = False
    precision: str = "fp32"
    quant: Any = None  # QuantOptions, for load_pretrained
    trust_remote_code: bool = False  # for load_pretrained: off unless the scenario or the CLI opts in
    allow_pickle: bool = False
    work_dir: Path | None = None  # where save_adapter writes
    clock: Any = None
    strategy: str = ""  # serve steps: the case's switching strategy (bench/engine/serving/strategies.py)

    @property
    def path(self) -> HotswapPath:
        """The hotswap path of the case, as a strategy object (bench.engine.hotswap)."""
        return PATHS[self.hotswap_path]

    # ----- model calls
    def forward(self):
        fn = self.compiled if self.compiled is not None else self.model
        return fn(**self.inputs.as_kwargs()).logits

    def generate(self):
        kwargs = generate_kwargs(self.workload, self.model.config.pad_token_id)
        out = self.model.generate(**self.inputs.as_kwargs(), **kwargs)
        return out[:, self.inputs.input_ids.shape[1] :]

    def generate_checked(self):
        """generate with each step's logits (output_logits): (new tokens, logits [steps, B, V])."""
        kwargs = generate_kwargs(self.workload, self.model.config.pad_token_id, logits=True)
        return generated(self.model.generate(**self.inputs.as_kwargs(), **kwargs), self.inputs)

    def verification_call(self):
        """The call whose output is checked after a state change: the workload's own kind."""
        return self.generate_checked() if self.workload.kind == "generate" else self.forward()

    def calls(self, kind: str | None):
        """(the call, its checked first call) for an op's `call` kind: generate's first call also returns
        each step's logits; None is the workload's own call after a state change (verification_call)."""
        if kind == "generate":
            return self.generate, self.generate_checked
        if kind == "forward":
            return self.forward, self.forward
        return self.verification_call, self.verification_call

    @property
    def backend(self) -> str:
        """The backend the model calls run on now: the case's once compiled, eager before."""
        compiled = self.compiled is not None or self.generate_compiled
        return self.compile_setting.backend if compiled else "eager"

    def compile(self, *, inplace: bool = False) -> None:
        """Compile as the case's setting says (the compile op, and serving's strategies before they serve).

        Forward workloads: `torch.compile(model, ...)`, or with `inplace` nn.Module.compile(): the module
        itself then runs compiled. Generate workloads: transformers' supported compile path, a static cache
        and its own torch.compile of the decoding forward (torch.compile(model).generate would run
        uncompiled)."""
        import torch  # heavy: the parent process imports this module's types without torch

        c = self.compile_setting
        if self.workload.kind == "generate":
            from transformers import CompileConfig

            cc = CompileConfig(**generate_compile_kwargs(c))
            cc._compile_all_devices = True  # transformers compiles only on accelerators unless told
            self.model.generation_config.compile_config = cc
            self.model.generation_config.cache_implementation = "static"
            self.generate_compiled = True
        else:
            kwargs = compile_kwargs(c)
            if inplace:
                self.model.compile(**kwargs)
                self.compiled = self.model
            else:
                self.compiled = torch.compile(self.model, **kwargs)


def compile_kwargs(c: CompileSetting) -> dict[str, Any]:
    """torch.compile's arguments for the setting: the run's call and the script's line are made from these."""
    kwargs: dict[str, Any] = {"backend": c.backend, "fullgraph": c.fullgraph, "dynamic": c.dynamic}
    if c.mode and c.mode != "default":
        kwargs["mode"] = c.mode
    return kwargs


def generate_compile_kwargs(c: CompileSetting) -> dict[str, Any]:
    """CompileConfig's arguments for the setting (a mode is inductor's only)."""
    mode = (c.mode or "default") if c.backend == "inductor" else None
    return {"backend": c.backend, "fullgraph": c.fullgraph, "dynamic": c.dynamic, "mode": mode}
