"""Bad model and adapter sources: each becomes that case's `error` with the reason, and nothing else breaks.

Every source here is real: folders written by save_pretrained, adapters built with peft for another base
model, IA3 and LoHa adapters saved with peft, safetensors files cut short or overwritten. The cases run
through the worker's own entry (bench.worker.__main__.run_spec) in this process, so no process start is paid
per case; that a worker error does not stop the run is checked with real processes in test_faults.py.
"""

from __future__ import annotations

import os
import shutil
from importlib.util import find_spec
from pathlib import Path

import pytest

from bench.engine.sources.adapters import resolve_adapter
from bench.engine.sources.models import resolve_model
from bench.runner.launch import RunOptions, case_spec
from bench.scenario import load_scenario
from bench.spec.cases import expand
from bench.spec.schema import AdapterSpec
from bench.worker.__main__ import run_spec
from tests.conftest import FAST_TIMING, LOAD_A, scenario_toml

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def sources(tmp_path_factory, cache_root) -> dict[str, Path]:
    """Good and foreign sources, built once: a LoRA adapter for tiny-llama, LoRA adapters made for tiny-gpt2
    (other module names) and tiny-qwen2 (v_proj has 32 outputs, tiny-llama's 64), IA3 and LoHa adapters."""
    from peft import IA3Config, LoHaConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    llama = resolve_model("builtin:tiny-llama", cache_root)
    gpt2 = resolve_model("builtin:tiny-gpt2", cache_root)
    qwen = resolve_model("builtin:tiny-qwen2", cache_root)
    out = {
        "llama": Path(llama.location),
        "lora": Path(resolve_adapter(AdapterSpec(key="lora", rank=4, seed=1), llama, cache_root).location),
        "gpt2_lora": Path(
            resolve_adapter(
                AdapterSpec(key="g", rank=4, seed=1, targets=("c_attn",)), gpt2, cache_root
            ).location
        ),
        "qwen_lora": Path(resolve_adapter(AdapterSpec(key="q", rank=4, seed=1), qwen, cache_root).location),
    }
    folder = tmp_path_factory.mktemp("foreign-adapters")
    configs = {
        "ia3": IA3Config(task_type="CAUSAL_LM", target_modules=["q_proj", "v_proj"], feedforward_modules=[]),
        "loha": LoHaConfig(task_type="CAUSAL_LM", target_modules=["q_proj", "v_proj"], r=4),
    }
    for kind, config in configs.items():
        base = AutoModelForCausalLM.from_pretrained(llama.location)
        get_peft_model(base, config).save_pretrained(folder / kind)
        out[kind] = folder / kind
    return out


def _scenario(model: str, adapters: dict[str, str], steps: list, paths: tuple = ("transformers",)) -> str:
    return scenario_toml(
        "bad-source",
        steps,
        model=model,
        matrix={"compile": ["none"], "hotswap_path": list(paths)},
        timing=FAST_TIMING,
        adapters={k: {"path": v} for k, v in adapters.items()},
    )


def _run(tmp_path: Path, text: str, cache_root: Path, **opts):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    results = []
    for case in expand(load_scenario(path)):
        spec = case_spec(case, RunOptions(out_dir=tmp_path, cache_root=cache_root, **opts))
        results.append(run_spec(spec))
    return results


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# Each entry: a name, a function (sources, tmp_path) -> (model, adapter path), and what the reason must say.
def _missing_model(s, tmp):
    return str(tmp / "no-such-model"), str(s["lora"])


def _relative_missing_model(s, tmp):
    return "./models/missing", str(s["lora"])


def _missing_adapter(s, tmp):
    return str(s["llama"]), str(tmp / "no-such-adapter")


def _nested_missing_adapter(s, tmp):
    return str(s["llama"]), "adapters/mine/v2"  # not a Hub id (OWNER/NAME): a missing path, not a download


def _adapter_without_config(s, tmp):
    folder = _copy(s["lora"], tmp / "noconfig")
    (folder / "adapter_config.json").unlink()
    return str(s["llama"]), str(folder)


def _adapter_config_not_json(s, tmp):
    folder = _copy(s["lora"], tmp / "badconfig")
    (folder / "adapter_config.json").write_text("{ this is not json")
    return str(s["llama"]), str(folder)


def _model_without_config(s, tmp):
    folder = _copy(s["llama"], tmp / "model-noconfig")
    (folder / "config.json").unlink()
    return str(folder), str(s["lora"])


def _truncated_adapter(s, tmp):
    folder = _copy(s["lora"], tmp / "trunc")
    _truncate(folder / "adapter_model.safetensors", 0.5)
    return str(s["llama"]), str(folder)


def _corrupt_adapter(s, tmp):
    folder = _copy(s["lora"], tmp / "corrupt")
    path = folder / "adapter_model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:24] = b"\x00garbage\xff\xfe!!!!!!"  # inside the JSON header
    path.write_bytes(bytes(data))
    return str(s["llama"]), str(folder)


def _truncated_model(s, tmp):
    folder = _copy(s["llama"], tmp / "model-trunc")
    _truncate(folder / "model.safetensors", 0.9)
    return str(folder), str(s["lora"])


def _empty_model_weights(s, tmp):
    folder = _copy(s["llama"], tmp / "model-empty")
    (folder / "model.safetensors").write_bytes(b"")
    return str(folder), str(s["lora"])


def _gpt2_adapter_on_llama(s, tmp):
    return str(s["llama"]), str(s["gpt2_lora"])


def _qwen_adapter_on_llama(s, tmp):
    return str(s["llama"]), str(s["qwen_lora"])


BAD_SOURCES = [
    (_missing_model, ["FileNotFoundError", "no-such-model", "does not exist"]),
    (_relative_missing_model, ["model './models/missing': path does not exist"]),
    (_missing_adapter, ["adapter 'a': path", "no-such-adapter", "does not exist"]),
    (_nested_missing_adapter, ["adapter 'a': path adapters/mine/v2 does not exist"]),
    (_adapter_without_config, ["adapter 'a'", "has no adapter_config.json"]),
    (_adapter_config_not_json, ["SourceError", "adapter_config.json is not valid JSON"]),
    (_model_without_config, ["model-noconfig has no config.json"]),
    (_truncated_adapter, ["SourceError: adapter 'a'", "not a valid safetensors file (truncated or corrupt)"]),
    (_corrupt_adapter, ["adapter 'a'", "not a valid safetensors file", "header"]),
    (
        _truncated_model,
        ["SourceError: model", "model.safetensors is not a valid safetensors file", "covered"],
    ),
    (_empty_model_weights, ["model.safetensors is not a valid safetensors file", "header too small"]),
    (
        _gpt2_adapter_on_llama,
        [
            "adapter 'a' does not fit model",
            "another base model",
            "transformer.h.0.attn.c_attn is not a module",
        ],
    ),
    (
        _qwen_adapter_on_llama,
        ["adapter 'a' does not fit model", "v_proj.lora_B.weight has shape [32, 4]", "gives 64 outputs"],
    ),
]


@pytest.mark.parametrize(
    ("make", "fragments"), BAD_SOURCES, ids=[m.__name__.strip("_") for m, _ in BAD_SOURCES]
)
def test_bad_source_is_the_cases_error(make, fragments, sources, tmp_path, cache_root):
    model, adapter = make(sources, tmp_path)
    (result,) = _run(tmp_path, _scenario(model, {"a": adapter}, [LOAD_A]), cache_root)
    assert result.verdict == "error", result.reason
    for fragment in fragments:
        assert fragment in result.reason, f"{fragment!r} not in {result.reason!r}"
    assert result.steps == ()  # refused before any step ran


def test_good_sources_pass(sources, tmp_path, cache_root):
    """The control for every case above: the same scenario with sound sources passes."""
    (result,) = _run(
        tmp_path, _scenario(str(sources["llama"]), {"a": str(sources["lora"])}, [LOAD_A]), cache_root
    )
    assert result.verdict == "pass", result.reason


HOTSWAP = [
    {"op": "load_adapter", "adapter": "first", "name": "default"},
    {"op": "load_adapter", "adapter": "other", "name": "default", "hotswap": True},
]


@pytest.mark.parametrize("kind", ["ia3", "loha"])
def test_hotswap_of_a_non_lora_adapter_is_an_error_on_both_paths(kind, sources, tmp_path, cache_root):
    text = _scenario(
        str(sources["llama"]),
        {"first": str(sources["lora"]), "other": str(sources[kind])},
        HOTSWAP,
        paths=("peft", "transformers"),
    )
    results = _run(tmp_path, text, cache_root)
    assert [r.params["hotswap_path"] for r in results] == ["peft", "transformers"]
    for r in results:
        assert r.verdict == "error"
        assert (
            f"step 2 (load_adapter): hotswap needs a LoRA adapter, but adapter 'other' is {kind.upper()}"
            in r.reason
        )


# Found by the refusal rule (issue 10, item 7): transformers 5.23's load_adapter of an adapter whose shapes do
# not fit raises RuntimeError only after injecting its layers and making it the active adapter.
HALF_LOADED = (
    "transformers 5.23 load_adapter raises on mismatched sizes after injecting the adapter and activating it: "
    "the half-loaded adapter stays active (peft_config keeps it)"
)


def test_expected_refusals_are_left_to_the_library(sources, tmp_path, cache_root):
    """A step that sets expect.raises tests the library's own refusal: the pre-checks stand aside.

    peft refuses the IA3 swap (ValueError); transformers 5.23 accepts it without an error, which the
    expectation then reports as a failure (the library's behaviour, not the suite's)."""
    first, swap = HOTSWAP
    shape = {
        "op": "load_adapter",
        "adapter": "shape",
        "expect": {"raises": "RuntimeError"},
        "known_failure": {"expectation": "refusal_leaves_state", "reason": HALF_LOADED},
    }
    text = _scenario(
        str(sources["llama"]),
        {"first": str(sources["lora"]), "other": str(sources["ia3"]), "shape": str(sources["qwen_lora"])},
        [first, {**swap, "expect": {"raises": "ValueError"}}, shape],
        paths=("peft", "transformers"),
    )
    peft, transformers = _run(tmp_path, text, cache_root)
    assert peft.verdict == "xfail", peft.reason
    assert "Incompatible PEFT types" in peft.steps[1].error
    assert "size" in peft.steps[2].error  # the library's own shape-mismatch error, expected
    # The refusal itself is right, but it leaves the half-loaded adapter active: the refusal check sees it.
    (left,) = [o for o in peft.steps[2].outcomes if o.expectation == "refusal_leaves_state"]
    assert left.status == "xfail" and all(o.status == "pass" for o in peft.steps[2].outcomes if o is not left)
    assert transformers.verdict == "fail"
    assert "step 2 (load_adapter): raises: expected ValueError, got no exception" in transformers.reason


def test_op_error_is_a_fail_and_halts_the_case(tmp_path, cache_root):
    """The other side of the line: an op that raises unexpectedly is the library's answer, a failed
    `succeeds` (verdict fail, not error), and the steps after it are not run. Here: a rank-8 adapter
    hotswapped into a rank-4 slot without enable_hotswap, through transformers."""
    steps = [
        {"op": "load_adapter", "adapter": "r4", "name": "default"},
        {"op": "load_adapter", "adapter": "r8", "name": "default", "hotswap": True},
        "forward",
    ]
    path = tmp_path / "halt.toml"
    path.write_text(
        scenario_toml(
            "halt",
            steps,
            scenario={"hotswap_path": "transformers"},
            timing=FAST_TIMING,
            adapters={"r4": {"rank": 4}, "r8": {"rank": 8}},
        )
    )
    (case,) = expand(load_scenario(path))
    result = run_spec(case_spec(case, RunOptions(out_dir=tmp_path, cache_root=cache_root)))
    assert result.verdict == "fail"
    assert result.reason.startswith("step 2 (load_adapter): succeeds: raised ")
    assert [s.status for s in result.steps] == ["pass", "fail", "not_run"]
    assert result.steps[2].notes == (
        "step 2 (load_adapter) raised "
        + result.steps[1].error.split(":")[0]
        + "; the model state is unknown",
    )


def test_a_case_that_raises_says_which_device_it_ran_on(tmp_path, write_scenario, cache_root, monkeypatch):
    """A fake torch.cuda that claims a GPU on this CPU-only build: the case picks cuda and raises while
    loading there. Its `error` result says cuda (the repro script reads it), where it used to say the
    default, cpu."""
    import torch

    path = write_scenario(scenario_toml("raises-on-cuda", ["forward"], matrix=None, adapters={}))
    (case,) = expand(load_scenario(path))
    spec = case_spec(case, RunOptions(out_dir=tmp_path, cache_root=cache_root))
    # Imported now, with the real answer: bitsandbytes imported first under the fake would look for its CUDA
    # library, fail half-way and stay in sys.modules without `bnb.nn`, breaking every later test of the
    # process that loads peft.
    if find_spec("bitsandbytes") is not None:
        import bitsandbytes  # noqa: F401
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    result = run_spec(spec)
    assert result.verdict == "error" and "cuda" in result.reason.lower(), result.reason
    assert result.device == "cuda"
    monkeypatch.undo()  # control: the same case where CUDA is not claimed runs, on the CPU
    result = run_spec(spec)
    assert result.verdict == "pass" and result.device == "cpu", result.reason


@pytest.mark.parametrize("which", ["adapter", "model"])
def test_a_symbolic_link_loop_is_an_input_error_not_a_hub_id(
    which, sources, tmp_path, cache_root, monkeypatch
):
    """Issue 32: `loops/self`, a link to itself, does not exist to Path.exists, and reads as a Hub id
    (OWNER/NAME): the adapter case was `fail` on `load_adapter: succeeds`, the model case talked of the Hub.
    Now the case is `error`, its reason naming the path and the loop.
    Control: on the old code the adapter case was `fail` and the model's reason spoke of reaching the Hub."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loops").mkdir()
    os.symlink("self", tmp_path / "loops" / "self")  # relative to its own folder: the link itself
    model, adapter = str(sources["llama"]), str(sources["lora"])
    if which == "adapter":
        adapter = "loops/self"
    else:
        model = "loops/self"
    (result,) = _run(tmp_path, _scenario(model, {"a": adapter}, [LOAD_A]), cache_root)
    assert result.verdict == "error", result.reason
    assert "loops/self" in result.reason and "a symbolic link loop" in result.reason, result.reason
    assert "Hub" not in result.reason and "huggingface" not in result.reason.lower(), result.reason
    assert result.steps == ()
