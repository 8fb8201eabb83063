"""The math oracle (no peft code) against the library's way of loading adapters, on real generated adapters.

Each agreement case also checks that the adapter moves the output far beyond the agreement bound, so an
oracle that ignored the adapter could not pass. Negative controls: a bug planted in peft's loading path is
invisible to the library reference and caught by the math oracle; a bug planted in the math oracle is caught
by the agreement rule; corrupted adapter files give errors naming the file and key.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bench.engine import lora_files, math_oracle, oracle_dora, oracle_params, oracle_rows
from bench.engine.math_oracle import ORACLE_RTOL, MathOracle, MathOracleError, compare_oracles
from bench.engine.model import load_model, make_inputs
from bench.engine.reference import ReferenceOracle, compare_logits
from bench.engine.sources.adapters import peft_config, resolve_adapter
from bench.engine.sources.models import resolve_model
from bench.errors import BenchInputError
from bench.spec.precision import TOLERANCES
from bench.spec.schema import AdapterSpec, Workload
from bench.spec.state import AdapterState, Slot

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = Workload(kind="forward", batch_size=2, seq_len=16)

LLAMA_SPECS = {
    "patterns": AdapterSpec(
        key="patterns",
        rank=4,
        alpha=8.0,
        targets=("q_proj", "v_proj", "down_proj"),
        rank_pattern=(("layers.0.self_attn.q_proj", 2), ("down_proj", 6)),
        alpha_pattern=(("v_proj", 2.0), ("layers.1.mlp.down_proj", 24.0)),
        seed=1,
    ),
    "second": AdapterSpec(key="second", rank=8, alpha=16.0, targets=("q_proj", "o_proj", "up_proj"), seed=2),
    "head": AdapterSpec(
        key="head", rank=4, alpha=8.0, targets=("q_proj",), modules_to_save=("lm_head",), seed=3
    ),
    "head2": AdapterSpec(
        key="head2", rank=4, alpha=8.0, targets=("v_proj",), modules_to_save=("lm_head",), seed=5
    ),
}
GPT2_SPECS = {
    # c_attn (64 -> 192), attn.c_proj (64 -> 64, square: a missing transpose still fits), mlp.c_proj (256 -> 64)
    "conv": AdapterSpec(
        key="conv",
        rank=4,
        alpha=8.0,
        targets=("c_attn", "c_proj"),
        rank_pattern=(("h.0.attn.c_attn", 2),),
        alpha_pattern=(("mlp.c_proj", 20.0),),
        modules_to_save=("lm_head",),  # GPT-2 ties lm_head to wte: the copy must not move the embeddings
        seed=4,
    ),
    "square": AdapterSpec(key="square", rank=4, alpha=8.0, targets=("attn.c_proj",), seed=6),
}


def _models(cache_root):
    return {
        "tiny-llama": resolve_model("builtin:tiny-llama", cache_root),
        "tiny-gpt2": resolve_model("builtin:tiny-gpt2", cache_root),
    }


@pytest.fixture(scope="module")
def world(cache_root, tmp_path_factory):
    """Real models and real saved adapters, built by the suite's own builders."""
    models = _models(cache_root)
    adapters = {}
    for model_name, specs in (("tiny-llama", LLAMA_SPECS), ("tiny-gpt2", GPT2_SPECS)):
        for key, spec in specs.items():
            adapters[key] = resolve_adapter(spec, models[model_name], cache_root).location
    # use_rslora: the suite's spec has no such field, so the saved config is switched on; peft then loads
    # the same A and B with scaling alpha / sqrt(r).
    rslora = tmp_path_factory.mktemp("rslora") / "rslora"
    shutil.copytree(adapters["second"], rslora)
    config = json.loads((rslora / "adapter_config.json").read_text())
    config["use_rslora"] = True
    (rslora / "adapter_config.json").write_text(json.dumps(config))
    adapters["rslora"] = str(rslora)
    return models, adapters


def _oracles(world, model_name, precision="fp32"):
    models, adapters = world
    location = models[model_name].location
    inputs = make_inputs(WORKLOAD, 1000, "cpu")
    specs = {**LLAMA_SPECS, **GPT2_SPECS}
    library = ReferenceOracle(
        location,
        precision,
        "cpu",
        inputs,
        WORKLOAD,
        adapters,
        {k: peft_config(s) for k, s in specs.items()},
    )
    math = MathOracle(location, precision, "cpu", inputs, WORKLOAD, adapters)
    return library, math


def _loaded(*pairs, active=None, enabled=True) -> AdapterState:
    slots = tuple(Slot(name, key, added) for name, key, added in pairs)
    return AdapterState(slots=slots, active=tuple(active or (slots[-1].name,)), enabled=enabled)


CASES = {
    "llama rank_pattern + alpha_pattern": ("tiny-llama", _loaded(("a", "patterns", False))),
    "llama use_rslora": ("tiny-llama", _loaded(("a", "rslora", False))),
    "llama two active": (
        "tiny-llama",
        _loaded(("a", "patterns", False), ("b", "second", False), active=("a", "b")),
    ),
    "llama modules_to_save": ("tiny-llama", _loaded(("a", "head", False))),
    "llama added + loaded active": (
        "tiny-llama",
        _loaded(("a", "patterns", False), ("b", "second", True), active=("a", "b")),
    ),
    "gpt2 Conv1D + patterns + modules_to_save (tied head)": ("tiny-gpt2", _loaded(("a", "conv", False))),
    "gpt2 square Conv1D": ("tiny-gpt2", _loaded(("a", "square", False))),
}

# fp32 on every case; the half and quantized precisions on the two widest cases (the figures for all seven are
# in the comment above ORACLE_RTOL).
AGREEMENT = [(case, "fp32") for case in CASES] + [
    (case, precision)
    for precision in ("bf16", "fp16", "int8", "nf4", "fp4")
    for case in ("llama two active", "gpt2 Conv1D + patterns + modules_to_save (tied head)")
]


@pytest.mark.parametrize(("case", "precision"), AGREEMENT)
def test_agreement(world, case, precision):
    model_name, state = CASES[case]
    library, math = _oracles(world, model_name, precision)
    lib, got = library.logits(state), math.logits(state)
    agreement = compare_oracles(lib, got, precision)
    relative = agreement.max_abs_diff / agreement.scale
    print(f"{precision} {case}: max|lib-math| = {agreement.max_abs_diff:.3g}, relative {relative:.3g}")
    assert agreement.agree, agreement
    # The check could fail: the adapter moves the output by several times the bound (fp32: 100x).
    effect = float((got - math.logits(AdapterState())).abs().max())
    assert effect > (100 if precision == "fp32" else 4) * agreement.bound, (case, effect, agreement.bound)


def test_quantized_layers_get_the_delta_as_a_hook(world, monkeypatch):
    """nf4: the q/v/o/up projections are bitsandbytes layers the delta cannot be merged into; without the hook
    the oracle gives the base output for them and the rule catches it (planted bug: no hooks)."""
    library, math = _oracles(world, "tiny-llama", "nf4")
    model = math.build(_loaded(("a", "second", False)))
    assert math_oracle.is_quantized(model.model.layers[0].self_attn.q_proj)
    assert model.model.layers[0].self_attn.q_proj._forward_hooks
    state = _loaded(("a", "patterns", False), ("b", "second", False), active=("a", "b"))
    lib = library.logits(state)
    assert compare_oracles(lib, math.logits(state), "nf4").agree
    _, broken = _oracles(world, "tiny-llama", "nf4")
    monkeypatch.setattr(math_oracle, "_hook_deltas", math_oracle._merge_deltas)
    assert not compare_oracles(lib, broken.logits(state), "nf4").agree


def test_disabled_and_added_only_give_the_base(world):
    library, math = _oracles(world, "tiny-llama")
    base = math.logits(AdapterState())
    disabled = _loaded(("a", "patterns", False), enabled=False)
    added_only = _loaded(("a", "second", True))
    for state in (disabled, added_only):
        assert compare_oracles(library.logits(state), math.logits(state), "fp32").agree
        assert torch.equal(math.logits(state), base)
    # and the plain base model is the library's base, bit for bit
    assert torch.equal(library.logits(AdapterState()), base)


def test_disabled_subject(world):
    """A subject that really calls disable_adapters() matches the math oracle's base."""
    models, adapters = world
    library, math = _oracles(world, "tiny-llama")
    model = load_model(models["tiny-llama"].location, "fp32", "cpu")
    model.load_adapter(adapters["patterns"], adapter_name="a")
    model.disable_adapters()
    state = _loaded(("a", "patterns", False), enabled=False)
    assert compare_oracles(model(**library.inputs.as_kwargs()).logits, math.logits(state), "fp32").agree


def test_tied_head_copy_leaves_embeddings_alone(world):
    _, math = _oracles(world, "tiny-gpt2")
    model = math.build(_loaded(("a", "conv", False)))
    base = math.build(AdapterState())
    assert torch.equal(model.transformer.wte.weight, base.transformer.wte.weight)
    assert not torch.equal(model.lm_head.weight, base.lm_head.weight)


def test_generate_tokens_agree(world):
    models, adapters = world
    wl = Workload(kind="generate", batch_size=2, seq_len=8, new_tokens=6)
    inputs = make_inputs(wl, 1000, "cpu")
    library = ReferenceOracle(models["tiny-gpt2"].location, "fp32", "cpu", inputs, wl, adapters, {})
    math = MathOracle(models["tiny-gpt2"].location, "fp32", "cpu", inputs, wl, adapters)
    state = _loaded(("a", "conv", False))
    assert torch.equal(library.tokens(state), math.tokens(state))
    assert not torch.equal(math.tokens(state), math.tokens(AdapterState()))


def test_trained_state_is_refused(world):
    _, math = _oracles(world, "tiny-llama")
    state = _loaded(("a", "patterns", False)).trained(full=False)
    with pytest.raises(MathOracleError, match="trained weights"):
        math.logits(state)


def test_check_uses_the_case_precision(world):
    library, math = _oracles(world, "tiny-llama")
    state = _loaded(("a", "patterns", False))
    agreement = math.check(state, library.logits(state))
    assert agreement.agree and agreement.rtol == ORACLE_RTOL["fp32"]
    assert not math.check(state, library.logits(AdapterState())).agree


def test_cache_per_state_key(world):
    _, math = _oracles(world, "tiny-llama")
    state = _loaded(("a", "patterns", False))
    math.logits(state)
    math.logits(AdapterState(slots=state.slots, active=state.active))  # same key
    assert math.fresh_loads == 1


def test_the_oracle_leaves_the_callers_grad_mode_alone(world):
    # It once switched autograd off for the whole process on every load (a training step after it in the
    # same process would have run without gradients unless it re-enabled them itself).
    _, math = _oracles(world, "tiny-llama")
    assert torch.is_grad_enabled()
    logits = math.logits(_loaded(("a", "patterns", False)))
    assert torch.is_grad_enabled() and not logits.requires_grad  # its own forward ran without autograd
    with torch.no_grad():  # the control: a caller's no_grad is kept too
        math.logits(_loaded(("a", "patterns", True)))
        assert not torch.is_grad_enabled()


def test_two_saved_copies_of_one_module_is_refused(world):
    """peft refuses two active adapters that both replace the same modules_to_save module; so does the oracle,
    with a reason, rather than pick one."""
    _, math = _oracles(world, "tiny-llama")
    state = _loaded(("a", "head", False), ("b", "head2", False), active=("a", "b"))
    with pytest.raises(MathOracleError, match="both replace 'lm_head'"):
        math.logits(state)


def test_library_refuses_two_active_when_one_has_modules_to_save(world):
    """Upstream fact (peft 0.21.2): set_adapter([a, b]) raises when either has modules_to_save, so there is no
    library output to agree with. The math oracle still computes the sum (b's copy of lm_head, both LoRAs);
    when this test starts failing, peft accepts the state and it belongs in CASES."""
    library, math = _oracles(world, "tiny-llama")
    state = _loaded(("a", "second", False), ("b", "head", False), active=("a", "b"))
    with pytest.raises(ValueError, match="multiple"):
        library.logits(state)
    both = math.logits(state)
    assert not torch.equal(both, math.logits(_loaded(("b", "head", False))))


# Negative control 1: a bug inside peft's loading path ------------------------------------------------------


def _ignore_alpha_pattern(monkeypatch):
    """Planted library bug: LoRA layers take the config's lora_alpha, whatever alpha_pattern says."""
    from peft.tuners.lora.layer import LoraLayer

    original = LoraLayer.update_layer

    def buggy(self, adapter_name, r, lora_alpha, config, **kwargs):
        return original(self, adapter_name, r, lora_alpha=config.lora_alpha, config=config, **kwargs)

    monkeypatch.setattr(LoraLayer, "update_layer", buggy)


def test_library_bug_is_invisible_to_the_library_reference_and_caught_by_the_math(world, monkeypatch):
    models, adapters = world
    library, math = _oracles(world, "tiny-llama")
    state = _loaded(("a", "patterns", False))
    _ignore_alpha_pattern(monkeypatch)
    subject = load_model(models["tiny-llama"].location, "fp32", "cpu")
    subject.load_adapter(adapters["patterns"], adapter_name="a")
    actual = subject(**library.inputs.as_kwargs()).logits
    # The bug hits the subject and the library's fresh reference alike: the existing check passes.
    assert compare_logits(actual, library.logits(state), TOLERANCES["fp32"], state.description).matches
    # The math oracle reads alpha_pattern itself: both the subject and the library reference disagree with it.
    assert not compare_oracles(library.logits(state), math.logits(state), "fp32").agree
    assert not compare_oracles(actual, math.logits(state), "fp32").agree


def test_without_the_planted_library_bug_all_three_agree(world):
    """The control of the control: the same subject without the bug agrees with both oracles."""
    models, adapters = world
    library, math = _oracles(world, "tiny-llama")
    state = _loaded(("a", "patterns", False))
    subject = load_model(models["tiny-llama"].location, "fp32", "cpu")
    subject.load_adapter(adapters["patterns"], adapter_name="a")
    actual = subject(**library.inputs.as_kwargs()).logits
    assert compare_logits(actual, library.logits(state), TOLERANCES["fp32"], state.description).matches
    assert compare_oracles(actual, math.logits(state), "fp32").agree


# Negative control 2: bugs planted in the math oracle itself ------------------------------------------------


def test_math_bug_ignoring_fan_in_fan_out_is_caught(world, monkeypatch):
    """attn.c_proj is square, so a delta left untransposed still fits the Conv1D weight: only the comparison
    can see it."""
    library, math = _oracles(world, "tiny-gpt2")
    state = _loaded(("a", "square", False))
    monkeypatch.setattr(
        math_oracle, "lora_delta", lambda w, lora, transposed, **kw: lora.scaling * (lora.B @ lora.A)
    )
    assert not compare_oracles(library.logits(state), math.logits(state), "fp32").agree


def test_math_bug_ignoring_rslora_is_caught(world, monkeypatch):
    library, math = _oracles(world, "tiny-llama")
    state = _loaded(("a", "rslora", False))
    original = lora_files.scaling_for
    monkeypatch.setattr(lora_files, "scaling_for", lambda c, n: original({**c, "use_rslora": False}, n))
    assert not compare_oracles(library.logits(state), math.logits(state), "fp32").agree


def test_math_bug_first_pattern_only_by_exact_name_is_caught(world, monkeypatch):
    """A pattern rule that matched whole names only (not dotted suffixes) would miss 'v_proj'."""
    library, math = _oracles(world, "tiny-llama")
    state = _loaded(("a", "patterns", False))
    monkeypatch.setattr(lora_files, "pattern_key", lambda keys, name: name if name in keys else None)
    # rank_pattern mismatch now shows up as a shape error naming the file, or as a disagreement
    try:
        got = math.logits(state)
    except BenchInputError as exc:
        assert "adapter_model.safetensors" in str(exc)
    else:
        assert not compare_oracles(library.logits(state), got, "fp32").agree


def test_math_bug_last_adapter_only_is_caught(world, monkeypatch):
    library, math = _oracles(world, "tiny-llama")
    state = _loaded(("a", "patterns", False), ("b", "second", False), active=("a", "b"))
    original = math_oracle._merge_deltas
    monkeypatch.setattr(
        math_oracle, "_merge_deltas", lambda modules, adapters, edits: original(modules, adapters[-1:], edits)
    )
    assert not compare_oracles(library.logits(state), math.logits(state), "fp32").agree


# Pattern rule, unit level --------------------------------------------------------------------------------


def test_pattern_key_rule():
    keys = ["layers.0.self_attn.q_proj", "q_proj", "down_proj"]
    assert lora_files.pattern_key(keys, "model.layers.0.self_attn.q_proj") == "layers.0.self_attn.q_proj"
    assert lora_files.pattern_key(keys, "model.layers.1.self_attn.q_proj") == "q_proj"
    assert lora_files.pattern_key(keys, "model.layers.1.self_attn.k_proj") is None
    # a suffix must start at a dot: "proj" does not match "q_proj"
    assert lora_files.pattern_key(["proj"], "model.layers.1.self_attn.q_proj") is None
    # first listed key wins
    assert lora_files.pattern_key(
        ["q_proj", "layers.0.self_attn.q_proj"], "model.layers.0.self_attn.q_proj"
    ) == ("q_proj")
    assert lora_files.scaling_for({"r": 4, "lora_alpha": 8, "use_rslora": True}, "x") == (4, 8.0, 4.0)


# Corrupted adapters: clear errors naming the file and the key -------------------------------------------


def _corrupt(world, tmp_path, edit):
    _, adapters = world
    folder = tmp_path / "corrupt"
    shutil.copytree(adapters["patterns"], folder)
    path = folder / "adapter_model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))
    return folder, path


@pytest.mark.parametrize(
    ("edit", "key", "why"),
    [
        (
            lambda t: t.update(
                {"base_model.model.model.layers.0.self_attn.q_proj.lora_C.weight": torch.zeros(2)}
            ),
            "base_model.model.model.layers.0.self_attn.q_proj.lora_C.weight",
            "unknown key",
        ),
        (
            lambda t: t.update(
                {"base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight": torch.zeros(4, 64)}
            ),
            "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight",
            "not in target_modules",
        ),
        (
            lambda t: t.pop("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"),
            "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight",
            "missing key",
        ),
        (
            lambda t: [t.pop(k) for k in list(t) if ".layers.0.mlp.down_proj." in k],
            "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight",
            "missing key",
        ),
    ],
    ids=["extra key", "untargeted module", "missing B", "missing module"],
)
def test_corrupted_adapter_names_file_and_key(world, tmp_path, edit, key, why):
    folder, path = _corrupt(world, tmp_path, edit)
    _, math = _oracles(world, "tiny-llama")
    math.adapter_locations = {"bad": str(folder)}
    with pytest.raises(BenchInputError) as info:
        math.logits(_loaded(("a", "bad", False)))
    assert info.value.source == str(path)
    assert info.value.field == key
    assert why in str(info.value)


def test_unsupported_config_field_is_named(world, tmp_path):
    _, adapters = world
    folder = tmp_path / "lora_bias"
    shutil.copytree(adapters["patterns"], folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["lora_bias"] = True
    (folder / "adapter_config.json").write_text(json.dumps(config))
    _, math = _oracles(world, "tiny-llama")
    math.adapter_locations = {"lora_bias": str(folder)}
    with pytest.raises(BenchInputError) as info:
        math.logits(_loaded(("a", "lora_bias", False)))
    assert info.value.source == str(folder / "adapter_config.json")
    assert info.value.field == "lora_bias"


# The comparison rule, pure -------------------------------------------------------------------------------


def test_compare_oracles_rule():
    ref = torch.tensor([[4.0, -2.0, 0.5]])
    bound = ORACLE_RTOL["fp32"] * 4.0
    assert compare_oracles(ref + 0.9 * bound, ref, "fp32").agree
    assert not compare_oracles(ref + torch.tensor([[0.0, 0.0, 1.1 * bound]]), ref, "fp32").agree
    assert not compare_oracles(ref[:, :2], ref, "fp32").agree
    assert not compare_oracles(torch.tensor([[float("nan"), -2.0, 0.5]]), ref, "fp32").agree
    small = torch.tensor([[1e-3]])  # the scale never drops below 1: tiny logits do not shrink the bound to 0
    assert compare_oracles(small + 0.5 * ORACLE_RTOL["fp32"], small, "fp32").scale == 1.0
    assert compare_oracles(small + 0.5 * ORACLE_RTOL["fp32"], small, "fp32").agree


# No peft code: static and at run time ------------------------------------------------------------------


@pytest.mark.parametrize("module", [math_oracle, lora_files, oracle_params, oracle_dora, oracle_rows])
def test_source_imports_no_peft(module):
    tree = ast.parse(Path(module.__file__).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.split(".")[0] == "peft"], names


@pytest.mark.slow
def test_runs_with_peft_blocked(world, tmp_path):
    """In a process where `import peft` fails, the oracle still computes the adapter's output, the same as
    the library's (computed here, with peft)."""
    models, adapters = world
    out = tmp_path / "logits.pt"
    code = f"""
import sys
sys.modules["peft"] = None  # any import of peft now raises ImportError
import torch
from bench.spec.schema import Workload
from bench.engine.math_oracle import MathOracle
from bench.engine.model import make_inputs
from bench.spec.state import AdapterState, Slot
wl = Workload(kind="forward", batch_size=2, seq_len=16)
oracle = MathOracle({models["tiny-gpt2"].location!r}, "fp32", "cpu", make_inputs(wl, 1000, "cpu"), wl,
                    {{"conv": {adapters["conv"]!r}}})
state = AdapterState(slots=(Slot("a", "conv", False),), active=("a",))
torch.save(oracle.logits(state), {str(out)!r})
assert not [m for m in sys.modules if m.split(".")[0] == "peft" and sys.modules[m] is not None]
"""
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    env.update({k: os.environ[k] for k in ("HOME", "HF_HOME", "XDG_CACHE_HOME") if k in os.environ})
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    library, _ = _oracles(world, "tiny-gpt2")
    got = torch.load(out)
    assert compare_oracles(library.logits(_loaded(("a", "conv", False))), got, "fp32").agree
