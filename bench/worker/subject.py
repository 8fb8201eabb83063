"""The model under test and the real API calls each scenario op makes on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.scenario.schema import AdapterSpec, CompileSetting, Step, Workload
from bench.sources.adapters import lora_config
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
    pending_target_rank: int | None = None  # peft path: prepare after the first adapter is loaded
    loaded_any: bool = False
    precision: str = "fp32"
    quant: Any = None  # QuantOptions, for load_pretrained
    trust_remote_code: bool = False  # for load_pretrained: off unless the scenario or the CLI opts in
    allow_pickle: bool = False
    work_dir: Path | None = None  # where save_adapter writes
    clock: Any = None

    # ----- model calls
    def forward(self):
        fn = self.compiled if self.compiled is not None else self.model
        return fn(**self.inputs.as_kwargs()).logits

    def generate(self):
        kwargs = generate_kwargs(self.workload, self.model.config.pad_token_id)
        out = self.model.generate(**self.inputs.as_kwargs(), **kwargs)
        return out[:, self.inputs.input_ids.shape[1] :]

    def verification_call(self):
        """The call whose output is checked after a state change: the workload's own kind."""
        return self.generate() if self.workload.kind == "generate" else self.forward()

    # ----- ops
    def apply(self, step: Step, adapters: dict[str, AdapterSpec], locations: dict[str, str]) -> Any:
        """Make the op's real API call(s). Returns what the op reports (train and repeat stats, names)."""
        return getattr(self, f"_op_{step.op}")(step, adapters, locations)

    def _hotswap(self, location: str, name: str) -> None:
        if self.hotswap_path == "transformers":
            self.model.load_adapter(location, adapter_name=name, hotswap=True)
        else:
            peft_hotswap(self.model, location, name, self.device)

    def _op_add_adapter(self, step, adapters, locations):
        self.model.add_adapter(lora_config(adapters[step.adapter]), adapter_name=step.name)
        self._after_first_load()

    def _op_load_adapter(self, step, adapters, locations):
        location = locations[step.adapter]
        if not step.hotswap:
            self.model.load_adapter(location, adapter_name=step.name)
            self._after_first_load()
        else:
            self._hotswap(location, step.name)

    def _after_first_load(self):
        if not self.loaded_any and self.pending_target_rank is not None:
            from peft.utils.hotswap import prepare_model_for_compiled_hotswap

            prepare_model_for_compiled_hotswap(
                self.model,
                target_rank=self.pending_target_rank,
                config=self.model.peft_config,
                check_compiled="error",
            )
            self.pending_target_rank = None
        self.loaded_any = True

    def _op_set_adapter(self, step, adapters, locations):
        self.model.set_adapter(list(step.names) if len(step.names) > 1 else step.names[0])

    def _op_enable_adapters(self, step, adapters, locations):
        self.model.enable_adapters()

    def _op_disable_adapters(self, step, adapters, locations):
        self.model.disable_adapters()

    def _op_delete_adapter(self, step, adapters, locations):
        self.model.delete_adapter(step.name)

    def _op_enable_hotswap(self, step, adapters, locations):
        if self.hotswap_path == "transformers":
            self.model.enable_peft_hotswap(target_rank=step.target_rank, check_compiled="error")
        elif self.loaded_any:
            from peft.utils.hotswap import prepare_model_for_compiled_hotswap

            prepare_model_for_compiled_hotswap(
                self.model,
                target_rank=step.target_rank,
                config=self.model.peft_config,
                check_compiled="error",
            )
        else:
            # PEFT's recipe prepares after the first adapter is loaded; the scenario states the intent up front
            # so that one step list serves both paths.
            self.pending_target_rank = step.target_rank

    def _op_compile(self, step, adapters, locations):
        import torch

        c = self.compile_setting
        if self.workload.kind == "generate":
            from transformers import CompileConfig

            # transformers' supported compile path for generate: a static cache and its own torch.compile of
            # the decoding forward (torch.compile(model).generate would run uncompiled).
            cc = CompileConfig(
                backend=c.backend,
                fullgraph=c.fullgraph,
                dynamic=c.dynamic,
                mode=(c.mode or "default") if c.backend == "inductor" else None,
            )
            cc._compile_all_devices = True  # transformers compiles only on accelerators unless told
            self.model.generation_config.compile_config = cc
            self.model.generation_config.cache_implementation = "static"
            self.generate_compiled = True
        else:
            kwargs: dict[str, Any] = {"backend": c.backend, "fullgraph": c.fullgraph, "dynamic": c.dynamic}
            if c.mode and c.mode != "default":
                kwargs["mode"] = c.mode
            self.compiled = torch.compile(self.model, **kwargs)

    def _op_load_pretrained(self, step, adapters, locations):
        from bench.worker.model import load_model

        # AutoModelForCausalLM.from_pretrained(<adapter folder>): transformers reads adapter_config.json,
        # loads the base it names and the adapter on top, as "default".
        self.model = load_model(
            locations[step.adapter],
            self.precision,
            self.device,
            quant=self.quant,
            trust_remote_code=self.trust_remote_code,
            allow_pickle=self.allow_pickle,
        )
        self.compiled = None
        self.loaded_any = True

    def _op_save_adapter(self, step, adapters, locations):
        if self.work_dir is None:
            raise RuntimeError("save_adapter needs a work folder for the case")
        folder = self.work_dir / step.save_as
        self.model.save_pretrained(folder)
        locations[step.save_as] = str(folder)

    def _op_active_adapters(self, step, adapters, locations):
        return list(self.model.active_adapters())

    def _op_train(self, step, adapters, locations):
        from bench.worker.model import vocab_size_of
        from bench.worker.train import train

        return train(
            self.model,
            self.workload,
            vocab_size_of(self.model),
            self.device,
            self.clock,
            steps=step.train_steps,
            learning_rate=step.learning_rate,
            full=step.full,
        )

    def _op_repeat_load(self, step, adapters, locations):
        from bench.worker.footprint import adapter_file_bytes
        from bench.worker.repeat import repeat_load

        base = step.name or "rep"

        def one(i: int) -> None:
            location = locations[step.cycle[i % len(step.cycle)]]
            if step.mode == "side_by_side":
                self.model.load_adapter(location, adapter_name=f"{base}{i}")
            elif step.mode == "hotswap":
                self._hotswap(location, base)
            else:
                self.model.load_adapter(location, adapter_name=base)
                self.model.delete_adapter(base)

        first = locations[step.cycle[0]]
        size = adapter_file_bytes(first) if Path(first).exists() else None
        return repeat_load(step.mode, step.count, one, self.clock, self.device, size)

    def _op_forward(self, step, adapters, locations):
        pass  # the measurement is the op: see execute.measure

    def _op_generate(self, step, adapters, locations):
        pass


def peft_hotswap(model, location: str, adapter_name: str, device: str) -> None:
    """PEFT's hotswap on a Transformers model that holds adapters through the integration.

    peft.utils.hotswap.hotswap_adapter expects a PeftModel (it reads `active_peft_config`); on a transformers
    model we make the same calls it makes: check the configs are compatible, load the weights, map their
    keys onto the model's adapter slot, and swap with hotswap_adapter_from_state_dict.
    """
    from peft import PeftConfig
    from peft.utils.hotswap import check_hotswap_configs_compatible, hotswap_adapter_from_state_dict
    from peft.utils.save_and_load import load_peft_weights

    config = PeftConfig.from_pretrained(location)
    check_hotswap_configs_compatible(model.peft_config[adapter_name], config)
    state_dict = load_peft_weights(location, device=device)
    hotswap_adapter_from_state_dict(model, map_adapter_keys(state_dict, adapter_name), adapter_name, config)


def map_adapter_keys(state_dict: dict[str, Any], adapter_name: str) -> dict[str, Any]:
    """Saved keys (`base_model.model.<module>.lora_A.weight`) -> the model's (`<module>.lora_A.<name>.weight`)."""
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("base_model.model.")
        parts = key.split(".")
        for i, part in enumerate(parts):
            if part.startswith("lora_") and i + 1 < len(parts) and parts[i + 1] != adapter_name:
                parts.insert(i + 1, adapter_name)
                break
        out[".".join(parts)] = value
    return out
