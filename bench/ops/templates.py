"""Helper functions every reproduction script carries (it runs with torch + transformers + peft only).

What the harness itself runs (its compile window, train loop, hotswap and merge functions) is not copied
here: the script carries those functions' own source (Writer.carry)."""

HELPERS = '''

def build_adapter(base, config, seed, init_std, out, save_embedding_layers="auto"):
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
    peft_model.save_pretrained(out, safe_serialization=True, save_embedding_layers=save_embedding_layers)
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
'''

TRAIN = '''

def train(model, steps, learning_rate, full, shape, seed=0):
    """The harness's train step: its parameter choice, batches and AdamW loop (the functions above)."""
    params = trainable_parameters(model, full=full)
    vocab = model.get_output_embeddings().weight.shape[0]
    batches = train_batches(vocab, shape, steps, DEVICE, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout draws from the global generator: seeded as the harness does
        losses = fit(model, params, batches, steps=steps, learning_rate=learning_rate)[0]
    count = sum(p.numel() for p in params)
    print(f"trained {count:,} parameters for {steps} steps: loss {losses[0]:.4g} -> {losses[-1]:.4g}")
    return losses
'''
