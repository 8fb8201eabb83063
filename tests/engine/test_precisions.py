"""Precisions: loaded as a user passes them, skipped (never replaced) where they cannot run, and the
bitsandbytes-on-CPU facts the harness works around, re-checked on the installed versions."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
import torch

from bench.scenario import load_scenario
from bench.spec.cases import expand
from bench.spec.host import fact_holds
from bench.spec.precision import (
    TOLERANCES,
    device_map,
    load_kwargs,
    needs_eager_forward_after_state_dict,
    unavailable_reason,
)
from bench.spec.schema import PRECISIONS, QuantOptions
from bench.worker.execute import run_case
from tests.conftest import REPO, SCENARIOS, scenario_toml


def _case(path, **params):
    cases = [c for c in expand(load_scenario(path)) if all(c.params[k] == v for k, v in params.items())]
    assert len(cases) == 1
    return cases[0]


def test_every_precision_has_a_tolerance_with_a_reason():
    assert set(TOLERANCES) == set(PRECISIONS)
    for name, tol in TOLERANCES.items():
        assert tol.atol > 0 and tol.rtol > 0 and len(tol.reason) > 20, name


def test_load_kwargs_are_what_a_user_passes():
    assert load_kwargs("bf16", "cpu") == {"dtype": torch.bfloat16}
    kw = load_kwargs("nf4", "cpu", QuantOptions(compute_dtype="fp16", double_quant=True))
    qc = kw["quantization_config"]
    assert qc.load_in_4bit and qc.bnb_4bit_quant_type == "nf4" and qc.bnb_4bit_use_double_quant
    assert qc.bnb_4bit_compute_dtype == torch.float16 and kw["device_map"] == "auto"
    assert load_kwargs("int8", "cpu")["quantization_config"].load_in_8bit


def test_device_map_is_auto_only_where_auto_puts_the_model_on_the_device_asked_for():
    assert device_map("cpu", 0) == "auto"  # a CPU host
    assert device_map("cuda", 1) == "auto"  # one GPU, the case on it
    # The H200 finding: "auto" on a GPU host put a `--device cpu` case's model on cuda:0 beside CPU inputs.
    assert device_map("cpu", 1) == {"": "cpu"}
    assert device_map("cuda:0", 2) == {"": "cuda:0"}  # "auto" would shard over both
    assert load_kwargs("nf4", "cpu")["device_map"] == device_map("cpu", torch.cuda.device_count())


@pytest.mark.slow
def test_missing_bitsandbytes_is_a_skip_not_a_fallback(tmp_path, write_scenario, cache_root):
    """A real failed import (a shadowing package that raises), in a real worker process."""
    path = write_scenario(NEEDS_BNB)
    out = tmp_path / "out"
    proc = _run_without_bnb(tmp_path, cache_root, [str(path), "--out", str(out), "-q"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json

    cases = {c["case_id"]: c for c in json.loads((out / "results.json").read_text())["cases"]}
    nf4 = cases["needs-bnb[nf4-none]"]
    assert nf4["verdict"] == "skip" and "deliberately broken" in nf4["reason"]
    assert cases["needs-bnb[fp32-none]"]["verdict"] == "pass"
    assert unavailable_reason("fp32", "cpu") is None


def test_a_required_precision_that_would_be_skipped_fails_the_run(tmp_path, write_scenario, cache_root):
    """--require-precision nf4 without a working bitsandbytes: a clear message and exit 2, before any case
    runs (no results folder). The control: the same run without the flag passes with nf4 skipped (above)."""
    out = tmp_path / "out"
    args = [str(write_scenario(NEEDS_BNB)), "--out", str(out), "-q", "--require-precision", "fp32,nf4"]
    proc = _run_without_bnb(tmp_path, cache_root, args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--require-precision: nf4 would be skipped: nf4 needs bitsandbytes" in proc.stderr
    assert "fp32" not in proc.stderr.split("--require-precision:")[1]  # fp32 runs: not named
    assert not (out / "results.json").exists()


def test_required_precisions_are_checked_by_name_and_after_the_run():
    from bench.cli.preflight import check_before_run, parse_required, skipped_required
    from bench.errors import BenchInputError
    from bench.results.records import CaseResult

    assert parse_required("nf4, int8,nf4") == ("nf4", "int8")
    with pytest.raises(BenchInputError, match="unknown precision nf5"):
        parse_required("nf4,nf5")
    with pytest.raises(BenchInputError, match="int8: no case of the selection runs it"):
        check_before_run(("int8",), ["fp32"], "cpu")
    check_before_run(("fp32",), ["fp32"], "cpu")  # the control: a required precision that runs
    skip = CaseResult("s[nf4-none]", "s", "s.toml", {"precision": "nf4"}, "skip", "needs bitsandbytes")
    ok = CaseResult("s[fp32-none]", "s", "s.toml", {"precision": "fp32"}, "pass", "")
    assert skipped_required(("nf4",), [skip, ok]) == ["s[nf4-none]: needs bitsandbytes"]
    assert skipped_required(("fp32",), [skip, ok]) == []


NEEDS_BNB = scenario_toml(
    "needs-bnb", ["forward"], matrix={"precision": ["nf4", "fp32"], "compile": ["none"]}, adapters={}
)


def _run_without_bnb(tmp_path, cache_root, args):
    """`peft-bench run ARGS` in a subprocess whose bitsandbytes is a shadowing package that fails to import."""
    shadow = tmp_path / "shadow" / "bitsandbytes"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ImportError('bitsandbytes deliberately broken for this test')\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": f"{shadow.parent}{os.pathsep}{REPO}",
        "PEFT_BENCH_CACHE": str(cache_root),
    }
    return subprocess.run(
        [sys.executable, "-m", "bench", "run", *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16", "nf4"])
def test_peft_hotswap_is_correct_in_each_precision(precision, cache_root):
    r = run_case(
        _case(SCENARIOS / "hotswap_precisions.toml", precision=precision, hotswap_path="peft"), cache_root
    )
    swap = next(s for s in r.steps if s.index == 5)
    assert swap.output.rule == "exact"
    assert swap.contrast.distinguishable
    if precision == "nf4":
        packs = fact_holds("bnb_cpu_packs_4bit", "cpu")
        assert r.host_facts == {"bnb_cpu_packs_4bit": packs}
        known = " ".join(o.known_failure or "" for o in swap.outcomes)
        # peft does not pad bnb LoRA layers (a recompile): on every host
        assert r.verdict == "xfail" and "bitsandbytes LoRA layers" in known
        if packs:
            assert any("eager forward" in n for n in swap.notes)  # the CPU repack workaround is reported
            # the 4-bit scales bug (test_bnb_cpu_unpack_permutes_the_block_scales): not absorbed by a tolerance
            assert not swap.output.matches and "absmax in the packed layout" in known
        else:  # no repack here: no workaround, no scales bug, and its marker is dropped (bench.spec.host)
            assert not any("eager forward" in n for n in swap.notes)
            assert swap.output.matches, swap.output  # within the exact rule (aot_eager: a few bf16 ulps)
            assert "absmax" not in known
    else:
        assert swap.output.matches and swap.output.max_abs_diff == 0, swap.output
        assert r.verdict == "pass", r.reason


def test_bnb_cpu_unpack_permutes_the_block_scales(cache_root):
    """The 0.01-0.04 nf4/fp4 difference after a swap, isolated without any adapter: on a CPU with
    avx512_bf16, bitsandbytes 0.50.2 repacks 4-bit weights on the first eager forward (absmax becomes a
    transposed bf16 [K/blocksize, N]); state_dict() unpacks them but leaves absmax in that layout, and the
    next forward's repack reads it as [N, K/blocksize]. Layers with one block per row (in_features 64) are
    unaffected; down_proj (in_features 128: two blocks) computes with permuted scales. When bitsandbytes
    fixes this, this test fails and the known_failure markers in the scenarios must go."""
    import bitsandbytes as bnb

    from bench.engine.model import load_model
    from bench.engine.sources.models import resolve_model

    model = load_model(resolve_model("builtin:tiny-llama", cache_root).location, "nf4", "cpu")
    packs = getattr(model.model.layers[0].mlp.down_proj, "support_avx512bf16_for_cpu", False)
    assert packs == fact_holds("bnb_cpu_packs_4bit", "cpu")  # the host fact is what the layer decides
    outputs: dict[str, list] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            mod.register_forward_hook(
                lambda m, i, o, name=name: outputs.setdefault(name, []).append((i[0].clone(), o.clone()))
            )
    ids = torch.randint(3, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids).logits.float()
        again = model(input_ids=ids).logits.float()
        model.state_dict()  # what both hotswap paths call
        after = model(input_ids=ids).logits.float()
    assert torch.equal(before, again)  # the forward itself is deterministic
    if not packs:
        # No avx512_bf16: nothing is repacked, so state_dict() has nothing to undo and the outputs stay
        # bit-identical. This is the fact that lets bench.spec.host drop the markers on such a host.
        assert torch.equal(before, after)
        return
    assert (after - before).abs().max() > 0.005  # ... the unpack/repack round trip is not
    changed = {}
    for name, calls in outputs.items():
        (x0, y0), _, (x2, y2) = calls
        if torch.equal(x0, x2):  # same input: a different output means the layer's weights changed
            changed[name] = not torch.equal(y0, y2)
    layer0 = {k.split(".")[-1]: v for k, v in changed.items() if ".layers.0." in k}
    assert layer0["down_proj"] and not any(v for k, v in layer0.items() if k != "down_proj"), layer0


def test_quantized_footprint_counts_quant_state(cache_root):
    r = run_case(_case(SCENARIOS / "quantized.toml", precision="nf4", compile="none"), cache_root)
    assert r.footprint.quant_state_bytes > 0  # get_memory_footprint() leaves these out
    fp32 = run_case(_case(SCENARIOS / "multi_adapter.toml", precision="fp32"), cache_root)
    assert fp32.footprint.quant_state_bytes == 0
    assert r.footprint.param_bytes < fp32.footprint.param_bytes


# ---- upstream facts the harness depends on: if one changes, this is where it shows -------------------


def _nf4_model(cache_root):
    from transformers import AutoModelForCausalLM

    from bench.engine.sources.models import resolve_model

    base = resolve_model("builtin:tiny-llama", cache_root).location
    # As the harness loads nf4 (compute dtype bf16), on the CPU: a CPU fact, on a GPU host too.
    return AutoModelForCausalLM.from_pretrained(base, **load_kwargs("nf4", "cpu"))


def _recompiles_after_state_dict(cache_root, eager_forward_between: bool) -> int:
    from bench.engine.probes.compile import configure_dynamo_for_counting, count_compiles

    configure_dynamo_for_counting()
    model = _nf4_model(cache_root).eval()
    ids = torch.randint(3, 1000, (2, 8), generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(model, backend="aot_eager")
    with torch.no_grad():
        model(input_ids=ids)  # the first eager forward repacks the 4-bit weights on CPU
        compiled(input_ids=ids)
        model.state_dict()  # what both hotswap paths call
        if eager_forward_between:
            model(input_ids=ids)
        with count_compiles() as window:
            compiled(input_ids=ids)
    return window.stats.recompiles


@pytest.mark.slow
def test_nf4_cpu_state_dict_recompile_and_its_workaround(cache_root):
    """The fact behind needs_eager_forward_after_state_dict, and the negative control for the workaround.
    Only a host where bitsandbytes repacks (avx512_bf16) has the recompile; elsewhere there is none to
    avoid, and the harness makes no extra forward."""
    packs = fact_holds("bnb_cpu_packs_4bit", "cpu")
    assert needs_eager_forward_after_state_dict("nf4", "cpu") == packs
    assert not needs_eager_forward_after_state_dict("nf4", "cuda")
    assert not needs_eager_forward_after_state_dict("bf16", "cpu")
    without = _recompiles_after_state_dict(cache_root, eager_forward_between=False)
    assert without >= 1 if packs else without == 0
    assert _recompiles_after_state_dict(cache_root, eager_forward_between=True) == 0


def test_peft_does_not_pad_bitsandbytes_lora_layers(cache_root):
    """Behind the known failure in hotswap_precisions.toml and quantized.toml (peft 0.21.2)."""
    from peft.utils.hotswap import prepare_model_for_compiled_hotswap

    from bench.engine.sources.adapters import resolve_adapter
    from bench.engine.sources.models import resolve_model

    scenario = load_scenario(SCENARIOS / "quantized.toml")
    model_src = resolve_model("builtin:tiny-llama", cache_root)
    adapter = resolve_adapter(scenario.adapter("r8"), model_src, cache_root)
    model = _nf4_model(cache_root)
    model.load_adapter(adapter.location, adapter_name="default")
    prepare_model_for_compiled_hotswap(model, target_rank=16, config=model.peft_config)
    q = model.model.layers[0].self_attn.q_proj
    assert q.lora_A["default"].weight.shape[0] == 8, (
        "peft now pads bnb layers: drop the known_failure markers"
    )
    assert isinstance(q.scaling["default"], torch.Tensor)  # the scalings are converted, though
    assert glob.glob(str(cache_root / "models" / "tiny-llama-*"))


@pytest.mark.parametrize(("device", "cuda_devices"), [("cpu", 0), ("cpu", 1), ("cuda", 1), ("cuda:0", 2)])
def test_a_repro_script_maps_the_device_as_the_worker_does(device, cuda_devices):
    """The script's LOAD_KWARGS lines, run with a fake torch.cuda that counts `cuda_devices`."""
    from types import SimpleNamespace

    from bench.report.repro.assemble import _load_kwargs

    lines = _load_kwargs(_case(SCENARIOS / "quantized.toml", precision="nf4", compile="none"))
    fake_torch = SimpleNamespace(
        cuda=SimpleNamespace(device_count=lambda: cuda_devices),
        float16=torch.float16,
        bfloat16=torch.bfloat16,
    )
    namespace = {"torch": fake_torch, "DEVICE": device}
    exec("\n".join(lines), namespace)
    assert namespace["LOAD_KWARGS"]["device_map"] == device_map(device, cuda_devices)
