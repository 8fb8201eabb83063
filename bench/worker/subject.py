"""The model under test and the real API calls each scenario op makes on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ops import OPS
from bench.ops.hotswap import PATHS, HotswapPath
from bench.scenario.schema import AdapterSpec, CompileSetting, Step, Workload
from bench.worker.model import Inputs, generate_kwargs


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
    strategy: str = ""  # serve steps: the case's switching strategy (bench/serving/strategies.py)

    @property
    def path(self) -> HotswapPath:
        """The hotswap path of the case, as a strategy object (bench.ops.hotswap)."""
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
        from bench.worker.reference import generated

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

    # ----- ops
    def apply(self, step: Step, adapters: dict[str, AdapterSpec], locations: dict[str, str]) -> Any:
        """Make the op's real API call(s) (bench/ops). Returns what the op reports (train and repeat stats, names)."""
        return OPS[step.op].apply(self, step, adapters, locations)
