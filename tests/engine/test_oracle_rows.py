"""The math oracle on rows (bench/engine/oracle_rows.py): every adapter alone on its own rows of one batch of an
unchanged plain base, its low-rank product added by forward hooks. Against the library reference (a fresh model
per adapter, peft) and the merge path (MathOracle, W + s * B @ A): within ORACLE_RTOL's fp32 bound of both, on
LoRA with rank and alpha patterns, rslora, AdaLoRA and GPT-2's Conv1D, while each adapter moves the output by
more than 100x the bound. Negative controls: a row given the next adapter's delta, a hook that ignores the
scaling, and a library that ignores alpha_pattern each fail the agreement; a hook left behind changes the
base's fingerprint. What it refuses (other precisions, IA3, modules_to_save, DoRA) goes the merge path, and a
serve step says which form its oracle took."""

from __future__ import annotations

import pytest
import torch

from bench.engine import oracle_rows
from bench.engine.math_oracle import ORACLE_RTOL, MathOracle, compare_oracles
from bench.engine.model import Inputs, make_inputs
from bench.engine.oracle_base import fingerprint
from bench.engine.reference import ReferenceOracle
from bench.engine.sources.adapters import peft_config, resolve_adapter
from bench.engine.sources.models import resolve_model
from bench.spec.schema import AdapterSpec, Workload
from bench.spec.state import AdapterState, Slot
from tests.engine.test_math_oracle import GPT2_SPECS, LLAMA_SPECS, _ignore_alpha_pattern
from tests.engine.test_oracle_base import METHOD_SPECS

WORKLOAD = Workload(kind="forward", batch_size=3, seq_len=16)
EXTRA = {
    "dora": AdapterSpec(key="dora", rank=4, alpha=8.0, targets=("q_proj", "v_proj"), seed=11, use_dora=True),
    "third": AdapterSpec(key="third", rank=8, alpha=32.0, targets=("k_proj", "gate_proj"), seed=12),
}
# Adapters the rows form takes, per model: LoRA with patterns, two plain ones, AdaLoRA; GPT-2's Conv1D.
ROWS = {"tiny-llama": ["patterns", "second", "third", "adalora"], "tiny-gpt2": ["square"]}


@pytest.fixture(scope="module")
def world(cache_root):
    models = {name: resolve_model(f"builtin:{name}", cache_root) for name in ("tiny-llama", "tiny-gpt2")}
    specs = {"tiny-llama": {**LLAMA_SPECS, **METHOD_SPECS, **EXTRA}, "tiny-gpt2": GPT2_SPECS}
    adapters = {
        key: resolve_adapter(spec, models[name], cache_root).location
        for name, by_key in specs.items()
        for key, spec in by_key.items()
    }
    configs = {k: peft_config(s) for by_key in specs.values() for k, s in by_key.items()}
    return models, adapters, configs


def _alone(key: str) -> AdapterState:
    return AdapterState(slots=(Slot(key, key, False),), active=(key,))


def _oracles(world, model="tiny-llama", precision="fp32", device="cpu"):
    models, adapters, configs = world
    inputs = make_inputs(WORKLOAD, 1000, device)
    location = models[model].location
    library = ReferenceOracle(location, precision, device, inputs, WORKLOAD, adapters, configs)
    return library, MathOracle(location, precision, device, inputs, WORKLOAD, adapters)


CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_check.sh)"
)


@pytest.mark.parametrize(
    ("model", "device"),
    [(m, "cpu") for m in sorted(ROWS)] + [pytest.param("tiny-llama", "cuda", marks=CUDA)],
)
def test_rows_agree_with_the_library_and_with_the_merge(world, model, device):
    library, math = _oracles(world, model, device=device)
    rows, why = oracle_rows.each_alone(math, ROWS[model])
    assert why is None and list(rows) == ROWS[model]
    base = math.logits(AdapterState())
    for key in ROWS[model]:
        lib, merged = library.logits(_alone(key)), math.logits(_alone(key))
        assert rows[key].shape == lib.shape == (WORKLOAD.batch_size, WORKLOAD.seq_len, lib.shape[-1])
        to_lib, to_merge = compare_oracles(lib, rows[key], "fp32"), compare_oracles(merged, rows[key], "fp32")
        merge_to_lib = compare_oracles(lib, merged, "fp32")
        print(
            f"{model} {device} {key}: rows-library {to_lib.max_abs_diff / to_lib.scale:.3g}, rows-merge "
            f"{to_merge.max_abs_diff / to_merge.scale:.3g}, merge-library "
            f"{merge_to_lib.max_abs_diff / merge_to_lib.scale:.3g} (relative; bound {ORACLE_RTOL['fp32']:g})"
        )
        assert to_lib.agree and to_merge.agree, (key, to_lib, to_merge)
        # The check could fail: each adapter moves the output by more than 100x the bound.
        assert float((rows[key] - base).abs().max()) > 100 * to_lib.bound, key


def test_many_adapters_are_cut_into_calls_of_at_most_rows_per_call(world, monkeypatch):
    assert oracle_rows.groups(["a", "b", "c", "d", "e"], 3, rows=7) == [["a", "b"], ["c", "d"], ["e"]]
    assert oracle_rows.groups(["a", "b"], 40, rows=32) == [["a"], ["b"]]  # never fewer than one adapter
    library, math = _oracles(world)
    keys = ROWS["tiny-llama"]
    whole, _ = oracle_rows.each_alone(math, keys)
    monkeypatch.setattr(oracle_rows, "ROWS_PER_CALL", WORKLOAD.batch_size)  # one adapter per call
    cut, real = [], oracle_rows.groups
    monkeypatch.setattr(oracle_rows, "groups", lambda *a, **k: cut.append(real(*a, **k)) or cut[-1])
    apart, _ = oracle_rows.each_alone(math, keys)
    assert cut == [[[k] for k in keys]] and set(apart) == set(whole)
    for key in keys:
        assert compare_oracles(apart[key], whole[key], "fp32").agree
        assert compare_oracles(library.logits(_alone(key)), apart[key], "fp32").agree


def _shifted(real_hook, prompts: int, adapters: int):
    """Planted bug: every piece lands on the next adapter's rows (the last adapter's on the first's)."""

    def hook(pieces):
        total = prompts * adapters
        return real_hook(
            [
                (slice((r.start + prompts) % total, (r.start + prompts) % total + prompts), s, a, b)
                for r, s, a, b in pieces
            ]
        )

    return hook


def test_a_row_given_the_next_adapters_delta_fails(world, monkeypatch):
    library, math = _oracles(world)
    keys = ["patterns", "second", "third"]
    monkeypatch.setattr(oracle_rows, "_hook", _shifted(oracle_rows._hook, WORKLOAD.batch_size, len(keys)))
    rows, _ = oracle_rows.each_alone(math, keys)
    assert not any(compare_oracles(library.logits(_alone(k)), rows[k], "fp32").agree for k in keys)


def test_a_hook_that_ignores_the_scaling_fails(world, monkeypatch):
    library, math = _oracles(world)
    real = oracle_rows._hook
    monkeypatch.setattr(oracle_rows, "_hook", lambda pieces: real([(r, 1.0, a, b) for r, _s, a, b in pieces]))
    rows, _ = oracle_rows.each_alone(math, ["patterns"])  # scaling 2 (alpha 8, rank 4), patterns elsewhere
    assert not compare_oracles(library.logits(_alone("patterns")), rows["patterns"], "fp32").agree


def test_a_library_that_ignores_alpha_pattern_disagrees_with_the_rows(world, monkeypatch):
    library, math = _oracles(world)
    rows, _ = oracle_rows.each_alone(math, ["patterns"])
    assert compare_oracles(library.logits(_alone("patterns")), rows["patterns"], "fp32").agree
    _ignore_alpha_pattern(monkeypatch)
    planted, _ = _oracles(world)
    assert not compare_oracles(planted.logits(_alone("patterns")), rows["patterns"], "fp32").agree


def test_the_base_is_left_as_loaded_and_a_left_hook_would_show(world, monkeypatch):
    _, math = _oracles(world)
    model = math.plain_base()
    modules = dict(model.named_modules())
    adapters = {k: math.adapter(k, modules) for k in ("patterns", "second")}
    before = fingerprint(model)
    first = oracle_rows.logits_on_rows(model, adapters, math.inputs.input_ids)
    assert fingerprint(model) == before
    again = oracle_rows.logits_on_rows(model, adapters, math.inputs.input_ids)
    assert all(torch.equal(first[k], again[k]) for k in adapters)  # nothing stacked up between calls
    # The control: a hook not removed is seen by the same fingerprint.
    handle = modules["model.layers.0.self_attn.q_proj"].register_forward_hook(lambda m, a, o: o)
    assert fingerprint(model) != before
    handle.remove()


@pytest.mark.parametrize(
    ("model", "precision", "keys", "why"),
    [
        (
            "tiny-llama",
            "bf16",
            ["patterns"],
            "bf16: the rows form is measured against its bound for fp32 only",
        ),
        ("tiny-llama", "fp32", ["patterns", "ia3"], "ia3: not only low-rank deltas"),
        ("tiny-llama", "fp32", ["head"], "head: not only low-rank deltas"),
        ("tiny-llama", "fp32", ["second", "dora"], "dora: DoRA (model.layers.0.self_attn.q_proj)"),
        ("tiny-gpt2", "fp32", ["conv"], "conv: not only low-rank deltas"),
    ],
)
def test_what_the_rows_refuse_goes_the_merge_path(world, monkeypatch, model, precision, keys, why):
    _, math = _oracles(world, model, precision)
    loads = []
    real = MathOracle._load
    monkeypatch.setattr(MathOracle, "_load", lambda self: loads.append(1) or real(self))
    rows, reason = oracle_rows.each_alone(math, keys)
    assert rows is None and reason.startswith(why), reason
    assert len(loads) == (0 if precision != "fp32" else 1)  # another precision is refused before any load


def test_a_serve_step_checks_its_adapters_on_rows_of_one_base(cache_root, write_scenario, monkeypatch):
    """fp32 LoRA served: the math oracle loads one base, merges nothing, and every adapter agrees; the record's
    notes say which form it took. With the rows refused the same step merges each adapter in turn (as before)
    and agrees too, with the refusal in its notes."""
    from bench.engine import math_oracle
    from bench.spec.cases import expand
    from bench.worker.execute import run_case
    from tests.engine.test_serving import _record, _serve

    (case,) = expand(_serve(write_scenario, alphas=(16, 32)))
    loads, merges = [], []
    real_load, real_merge = MathOracle._load, math_oracle._merge_deltas
    monkeypatch.setattr(MathOracle, "_load", lambda self: loads.append(1) or real_load(self))
    monkeypatch.setattr(math_oracle, "_merge_deltas", lambda *a: merges.append(1) or real_merge(*a))
    on_rows = _record(run_case(case, cache_root))[1]
    assert (len(loads), len(merges)) == (1, 0)
    monkeypatch.setattr(oracle_rows, "each_alone", lambda math, keys: (None, "refused by the test"))
    merged = _record(run_case(case, cache_root))[1]
    assert (len(loads), len(merges)) == (2, 3)
    for sv in (on_rows, merged):
        assert len(sv.oracle_agreement) == 3 and all(a.agree for a in sv.oracle_agreement.values())
        assert sv.figures.checked_responses > 0 and sv.figures.wrong_responses == 0
    assert any(n.startswith("math oracle: each adapter alone on its own rows") for n in on_rows.notes)
    assert "math oracle: each adapter merged into the base in turn (refused by the test)" in merged.notes
    for key, a in on_rows.oracle_agreement.items():  # the two forms are within the bound of each other too
        assert abs(a.max_abs_diff - merged.oracle_agreement[key].max_abs_diff) <= a.bound


def test_inputs_of_another_shape_are_split_by_adapter(world):
    """Two prompts per adapter, four adapters: rows 0-1 are the first adapter's, 6-7 the last's."""
    library, math = _oracles(world)
    two = Inputs(math.inputs.input_ids[:2], math.inputs.attention_mask[:2])
    math2 = MathOracle(math.model_location, "fp32", "cpu", two, WORKLOAD, math.adapter_locations)
    rows, _ = oracle_rows.each_alone(math2, ROWS["tiny-llama"])
    for key in ROWS["tiny-llama"]:
        assert rows[key].shape[0] == 2
        assert compare_oracles(library.logits(_alone(key))[:2], rows[key], "fp32").agree
