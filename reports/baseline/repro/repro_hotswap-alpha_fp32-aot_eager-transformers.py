#!/usr/bin/env python3
"""Reproduction of hotswap-alpha[fp32-aot_eager-transformers] (xfail), written by peft-bench.

step 5 (load_adapter): matches_reference: output vs fresh reference (default=a4; active=[default];
enabled): max abs diff 0.3 (tolerance atol 0.0001 + rtol 0.0001)

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
ATOL, RTOL = 0.0001, 0.0001  # peft-bench's tolerance for fp32 logits
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


class CompileWindow:
    """Recompiles and graph breaks dynamo records while the block runs (compilation metrics, counters)."""

    def __enter__(self):
        from torch._dynamo.utils import clear_compilation_metrics, counters

        clear_compilation_metrics()
        self.breaks_before = sum(counters["graph_break"].values())
        return self

    def __exit__(self, *exc):
        from torch._dynamo.utils import counters, get_compilation_metrics

        reasons = [m.recompile_reason for m in get_compilation_metrics() if m.recompile_reason]
        self.recompiles = len(reasons)
        self.reasons = [" ".join(str(r).split(" User stack trace:")[0].split())[:400] for r in reasons]
        self.graph_breaks = sum(counters["graph_break"].values()) - self.breaks_before
        return False


class Totals:
    """Counts over the whole case, for an expectation on the case's total."""

    def __init__(self):
        self.recompiles, self.graph_breaks, self.reasons = 0, 0, []

    def add(self, window):
        self.recompiles += window.recompiles
        self.graph_breaks += window.graph_breaks
        self.reasons += window.reasons


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
    model.requires_grad_(False)  # the harness resets it: dynamo guards on requires_grad
    out = forward(model, compiled)

    # step 3: compile
    compiled = torch.compile(model, backend='aot_eager', fullgraph=False, dynamic=None)

    # step 4: forward
    out = forward(model, compiled)

    # step 5: load_adapter (adapter='a4', name='default', hotswap=True)
    # ^ the step that failed in the run
    with CompileWindow() as window:
        model.load_adapter(ADAPTERS['a4'], adapter_name='default', hotswap=True)
        model.requires_grad_(False)  # the harness resets it: dynamo guards on requires_grad
        out = forward(model, compiled)
    check_output(out, reference([('default', 'loaded', 'a4')], ['default']), 'step 5 (load_adapter)', want=True)
    print('NOT REPRODUCED: the check that failed in the run holds here')



if __name__ == "__main__":
    work = tempfile.mkdtemp(prefix='peft-repro-')
    try:
        main(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
