"""The two hotswap paths as strategy objects: transformers' integration and PEFT's own functions.

Each path knows how to enable compiled hotswapping, what happens after the first adapter is loaded, and how
to swap new weights into a loaded slot, both as a real call on the subject and as script lines. A script
carries the path's own functions (prepare, peft_hotswap) verbatim, so it swaps exactly as the run did.
Nothing else in the suite branches on the path's name.
"""

from __future__ import annotations

from typing import Any, ClassVar


class HotswapPath:
    name: ClassVar[str]
    # enable_hotswap zero-pads the loaded LoRA layers to target_rank (the library reference pads alike).
    pads_to_target_rank: ClassVar[bool] = False
    # The import lines a reproduction script needs for this path's calls (its functions are carried).
    script_imports: ClassVar[tuple[str, ...]] = ()

    def enable(self, subject, target_rank: int) -> None:
        raise NotImplementedError

    def after_first_load(self, subject) -> None:
        """Called after each plain add/load; a path may finish its preparation then."""
        subject.loaded_any = True

    def swap(self, subject, location: str, name: str) -> None:
        raise NotImplementedError

    def script_enable(self, w, target_rank: int) -> None:
        raise NotImplementedError

    def script_after_first_load(self, w) -> None:
        w.loaded_any = True

    def script_swap(self, w, location_expr: str, name: str) -> None:
        raise NotImplementedError


class TransformersPath(HotswapPath):
    """`enable_peft_hotswap(target_rank=...)`, then `load_adapter(..., hotswap=True)`."""

    name = "transformers"

    def enable(self, subject, target_rank: int) -> None:
        subject.model.enable_peft_hotswap(target_rank=target_rank, check_compiled="error")

    def swap(self, subject, location: str, name: str) -> None:
        subject.model.load_adapter(location, adapter_name=name, hotswap=True)

    def script_enable(self, w, target_rank: int) -> None:
        w.emit(f'model.enable_peft_hotswap(target_rank={target_rank}, check_compiled="error")')

    def script_swap(self, w, location_expr: str, name: str) -> None:
        w.emit(f"model.load_adapter({location_expr}, adapter_name={name!r}, hotswap=True)")


class PeftPath(HotswapPath):
    """`prepare_model_for_compiled_hotswap` right after the first load, then PEFT's state-dict hotswap."""

    name = "peft"
    pads_to_target_rank = True
    script_imports = ("from typing import Any",)  # map_adapter_keys's annotations

    def enable(self, subject, target_rank: int) -> None:
        if subject.loaded_any:
            prepare(subject.model, target_rank)
        else:
            # PEFT's recipe prepares after the first adapter is loaded; the scenario states the intent up front
            # so that one step list serves both paths.
            subject.pending_target_rank = target_rank

    def after_first_load(self, subject) -> None:
        if not subject.loaded_any and subject.pending_target_rank is not None:
            prepare(subject.model, subject.pending_target_rank)
            subject.pending_target_rank = None
        subject.loaded_any = True

    def swap(self, subject, location: str, name: str) -> None:
        peft_hotswap(subject.model, location, name, subject.device)

    def script_enable(self, w, target_rank: int) -> None:
        if w.loaded_any:
            _script_prepare(w, target_rank)
        else:
            w.emit("pass  # PEFT path: prepare_model_for_compiled_hotswap runs after the first load")
            w.pending_target_rank = target_rank

    def script_after_first_load(self, w) -> None:
        if not w.loaded_any and w.pending_target_rank is not None:
            w.emit("# PEFT's recipe: prepare for compiled hotswap right after the first adapter is loaded")
            _script_prepare(w, w.pending_target_rank)
            w.pending_target_rank = None
        w.loaded_any = True

    def script_swap(self, w, location_expr: str, name: str) -> None:
        # The very functions the harness calls (the script runs without peft-bench: their source, carried).
        w.carry(peft_hotswap, map_adapter_keys)
        w.emit(f"peft_hotswap(model, {location_expr}, {name!r}, DEVICE)")


PATHS: dict[str, HotswapPath] = {p.name: p for p in (TransformersPath(), PeftPath())}


def prepare(model, target_rank: int) -> None:
    from peft.utils.hotswap import prepare_model_for_compiled_hotswap

    prepare_model_for_compiled_hotswap(
        model, target_rank=target_rank, config=model.peft_config, check_compiled="error"
    )


def _script_prepare(w, rank: int) -> None:
    w.carry(prepare)
    w.emit(f"prepare(model, target_rank={rank})  # peft's prepare_model_for_compiled_hotswap")


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
    """Saved keys (`base_model.model.<module>.lora_A.weight`) -> the model's (`<module>.lora_A.<name>.weight`).
    A key that ends in its `lora_` part (DoRA's `<module>.lora_magnitude_vector`, an embedding's
    `<module>.lora_embedding_A`) gets the name appended, as peft's own hotswap_adapter maps it."""
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("base_model.model.")
        parts = key.split(".")
        for i, part in enumerate(parts):
            if part.startswith("lora_") and (i + 1 == len(parts) or parts[i + 1] != adapter_name):
                parts.insert(i + 1, adapter_name)
                break
        out[".".join(parts)] = value
    return out


def lora_storage(model, name: str) -> dict[str, tuple[int, int, bool]]:
    """Adapter `name`'s LoRA weights in `model`, and its `modules_to_save` copies' weights: path -> (object id,
    storage address, is a Parameter).

    A hotswap promises to copy the new weights into these: a compiled graph guards on the objects, and a CUDA
    graph replays reads from the addresses, so a swap that rebinds new tensors gives right eager outputs and a
    graph that still reads the old weights."""
    import torch  # heavy: this module's path objects are read by the parent through the ops

    # The attributes of a LoRA layer holding one adapter's weights (ModuleDicts of layers, or ParameterDicts);
    # kept inside the function, which reproduction scripts carry verbatim.
    weights = (
        "lora_A",
        "lora_B",
        "lora_embedding_A",
        "lora_embedding_B",
        "lora_magnitude_vector",
        "modules_to_save",  # a ModulesToSaveWrapper's copies: a swap must copy the new copy into them too
    )
    out = {}
    for path, module in model.named_modules():
        for attr in weights:
            holder = getattr(module, attr, None)
            if holder is None or not hasattr(holder, "keys") or name not in holder.keys():
                continue
            w = holder[name]
            w = getattr(w, "weight", w)
            out[f"{path}.{attr}"] = (id(w), w.data_ptr(), isinstance(w, torch.nn.Parameter))
    return out


def moved_by_swap(before: dict, after: dict) -> list[tuple[str, str]]:
    """The weights a swap did not update in place, each with how: "gone", "not a Parameter", "new object", or
    "new storage" (the same object whose .data was replaced)."""
    moved = []
    for key, (obj, ptr, is_param) in sorted(before.items()):
        now = after.get(key)
        if now is None:
            moved.append((key, "gone"))
        elif is_param and not now[2]:
            moved.append((key, "not a Parameter"))
        elif now[0] != obj:
            moved.append((key, "new object"))
        elif now[1] != ptr:
            moved.append((key, "new storage"))
    return moved
