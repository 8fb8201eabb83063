#!/usr/bin/env python3
"""Reproduction of hotswap-alpha[fp32-aot_eager-transformers] (xfail), written by peft-bench.

step 5 (load_adapter): matches_reference: output vs fresh reference (default=a4; active=[default];
enabled): max abs diff 0.3 (tolerance atol 9.53674e-07 + rtol 0)

Checks step 5: matches_reference (expected true, got false).
Recorded with torch 2.13.0+cpu, transformers 5.23.0, peft 0.21.2 on cpu.
Needs only torch, transformers and peft. Run: python repro_hotswap-alpha_fp32-aot_eager-transformers.py
Prints "REPRODUCED: ..." and exits 1 when the failure happens; "NOT REPRODUCED" and exits 0 otherwise.
"""

import shutil
import sys
import tempfile
import traceback

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, CompileConfig

DEVICE = 'cpu'
ATOL, RTOL = 9.5367431640625e-07, 0.0  # peft-bench's tolerance for fp32 logits
GENERATE = False
LOAD_KWARGS = {'dtype': torch.float32}

# builtin:tiny-llama: a tiny LlamaForCausalLM built from this config and seed.
BUILTIN_CONFIG = {'hidden_size': 64, 'intermediate_size': 128, 'num_hidden_layers': 2, 'num_attention_heads': 4, 'num_key_value_heads': 4, 'vocab_size': 1000, 'max_position_embeddings': 256, 'pad_token_id': 0, 'bos_token_id': 1, 'eos_token_id': 2}


def build_base_model(out):
    config = transformers.LlamaConfig(**BUILTIN_CONFIG)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = transformers.LlamaForCausalLM(config)
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    return out


def lora_config_a16():
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=8,
        lora_alpha=16.0,
        target_modules=['q_proj', 'v_proj'],
        rank_pattern={},
        alpha_pattern={},
        lora_dropout=0.0,
        modules_to_save=None,
    )


def lora_config_a4():
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=8,
        lora_alpha=4.0,
        target_modules=['q_proj', 'v_proj'],
        rank_pattern={},
        alpha_pattern={},
        lora_dropout=0.0,
        modules_to_save=None,
    )


LORA_CONFIGS = {'a16': lora_config_a16, 'a4': lora_config_a4}


def build_adapter(base, config, seed, init_std, out):
    """A real LoRA adapter with non-zero B: LoRA's default init (B = 0) would not move the output."""
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(peft_model.named_parameters()):
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * init_std)
            elif "modules_to_save" in name:
                param.add_(torch.randn(param.shape, generator=gen) * init_std)
    peft_model.save_pretrained(out, safe_serialization=True)
    return out


def load_model(location):
    model = AutoModelForCausalLM.from_pretrained(location, use_safetensors=True, **LOAD_KWARGS)
    if "device_map" not in LOAD_KWARGS:
        model.to(DEVICE)
    model.eval()
    model.requires_grad_(False)
    return model


def forward(model, compiled):
    return (compiled if compiled is not None else model)(**INPUTS).logits


def generate(model):
    out = model.generate(**INPUTS, **GENERATE_KWARGS)
    return out[:, INPUTS["input_ids"].shape[1] :]


def reference(slots, active):
    """The eager output of a freshly loaded model holding exactly `slots` (name, kind, key), `active` on."""
    ref = load_model(BASE)
    for name, kind, key in slots:
        if kind == "added":
            with torch.random.fork_rng(devices=[]):
                ref.add_adapter(LORA_CONFIGS[key](), adapter_name=name)
        else:
            ref.load_adapter(ADAPTERS[key], adapter_name=name)
    if len(active) > 1:
        ref.set_adapter(list(active))
    elif active:
        ref.set_adapter(active[0])
    ref.requires_grad_(False)
    return (generate(ref) if GENERATE else forward(ref, None)).cpu()


def reproduced(message):
    print("REPRODUCED:", message)
    sys.exit(1)


def check_output(actual, ref, what, want=True):
    actual = actual.cpu()
    if GENERATE:
        equal = actual.shape == ref.shape and bool((actual == ref).all())
        differ = int((actual != ref).sum()) if actual.shape == ref.shape else ref.numel()
        matches, detail = equal, f"{differ} of {ref.numel()} greedy tokens differ"
    elif actual.shape != ref.shape:
        matches, detail = False, f"shape {tuple(actual.shape)} vs reference {tuple(ref.shape)}"
    else:
        actual = actual.float()
        diff = (actual - ref).abs()
        matches = bool(torch.isfinite(actual).all()) and bool((diff <= ATOL + RTOL * ref.abs()).all())
        detail = f"max abs diff {diff.max().item():.3g} (tolerance atol {ATOL:g} + rtol {RTOL:g})"
    print(f"{what}: output vs a freshly loaded reference: {detail}")
    if matches != want:
        verb = "differs from" if want else "matches"
        reproduced(f"{what}: the output {verb} a freshly loaded reference with the same adapters ({detail})")


class Totals:
    """Counts over the whole case, for an expectation on the case's total."""

    def __init__(self):
        self.recompiles, self.graph_breaks, self.reasons = 0, 0, []

    def add(self, window):
        self.recompiles += window.recompiles
        self.graph_breaks += window.graph_breaks
        self.reasons += window.reasons


def _one_line(text: str) -> str:
    # The guard text is what a reader needs; dynamo appends the user stack, which is noise here.
    return " ".join(str(text).split(" User stack trace:")[0].split())[:500]


class CompileWindow:
    """Dynamo's work between start() and stop() (or while a with-block runs): `metrics` (one compile record
    per frame compile), `recompiles` with their one-line `reasons`, `graph_breaks` with their
    `break_reasons`, and `unique_graphs`.

    Reproduction scripts carry this class and _one_line verbatim (bench.report.repro), so a script counts
    exactly as the run did: it imports only torch, inside its methods.
    """

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        from collections import Counter

        from torch._dynamo.utils import clear_compilation_metrics, counters

        clear_compilation_metrics()
        self._breaks_before = Counter(counters["graph_break"])
        self._unique_before = counters["stats"]["unique_graphs"]

    def stop(self):
        from collections import Counter

        from torch._dynamo.utils import counters, get_compilation_metrics

        self.metrics = list(get_compilation_metrics())
        breaks = Counter(counters["graph_break"])
        breaks.subtract(self._breaks_before)
        self.graph_breaks = sum(v for v in breaks.values() if v > 0)
        self.break_reasons = sorted(_one_line(k) for k, v in breaks.items() if v > 0)
        self.reasons = [_one_line(m.recompile_reason) for m in self.metrics if m.recompile_reason]
        self.recompiles = len(self.reasons)
        self.unique_graphs = counters["stats"]["unique_graphs"] - self._unique_before


def lora_storage(model, name: str) -> dict[str, tuple[int, int, bool]]:
    """Adapter `name`'s LoRA weights in `model`: path -> (object id, storage address, is a Parameter).

    A hotswap promises to copy the new weights into these: a compiled graph guards on the objects, and a CUDA
    graph replays reads from the addresses, so a swap that rebinds new tensors gives right eager outputs and a
    graph that still reads the old weights."""
    import torch  # heavy: this module's path objects are read by the parent through the ops

    # The attributes of a LoRA layer holding one adapter's weights (ModuleDicts of layers, or ParameterDicts);
    # kept inside the function, which reproduction scripts carry verbatim.
    weights = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")
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


def main(work):
    global BASE, ADAPTERS, INPUTS, GENERATE_KWARGS
    print('torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)
    BASE = build_base_model(f'{work}/base')
    ADAPTERS = {
        'a16': build_adapter(BASE, lora_config_a16(), seed=1, init_std=0.05, out=f'{work}/adapters/a16'),
        'a4': build_adapter(BASE, lora_config_a4(), seed=3, init_std=0.05, out=f'{work}/adapters/a4'),
    }
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    model = load_model(BASE)
    compiled = None
    # The fixed inputs: token ids from a seeded generator, avoiding pad/bos/eos (0-2).
    gen = torch.Generator().manual_seed(0)
    vocab = model.get_output_embeddings().weight.shape[0]
    ids = torch.randint(3, vocab, (2, 16), generator=gen)
    INPUTS = {'input_ids': ids.to(DEVICE), 'attention_mask': torch.ones_like(ids).to(DEVICE)}
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    GENERATE_KWARGS = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=pad)

    # step 1: enable_hotswap (target_rank=8)
    model.enable_peft_hotswap(target_rank=8, check_compiled="error")

    # step 2: load_adapter (adapter='a16', name='default')
    model.load_adapter(ADAPTERS['a16'], adapter_name='default')
    out = forward(model, compiled)

    # step 3: compile
    compiled = torch.compile(model, backend='aot_eager', fullgraph=False, dynamic=None)

    # step 4: forward
    out = forward(model, compiled)

    # step 5: load_adapter (adapter='a4', name='default', hotswap=True)
    # ^ the step that failed in the run
    with CompileWindow() as window:
        swap_before = lora_storage(model, 'default')
        model.load_adapter(ADAPTERS['a4'], adapter_name='default', hotswap=True)
        out = forward(model, compiled)
    check_output(out, reference([('default', 'loaded', 'a4')], ['default']), 'step 5 (load_adapter)', want=True)
    print('NOT REPRODUCED: the check that failed in the run holds here')



if __name__ == "__main__":
    work = tempfile.mkdtemp(prefix='peft-repro-')
    try:
        main(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
