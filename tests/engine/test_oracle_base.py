"""The math oracle on one base model (MathOracle.one_base, bench/engine/oracle_base.py): every state applied to
one model loaded once and undone exactly after its run gives, bit for bit, what a fresh model per state gives
(LoRA with patterns, two active, modules_to_save and a tied head, IA3, AdaLoRA, added slots, the base; fp32,
bf16 and nf4's hooks; forward and generate). Negative controls: an undo that misses a kept weight, a replaced
parameter or a hook is caught by the fingerprint and costs a reload, never a wrong result; without the
fingerprint the same miss gives wrong logits."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.engine import oracle_base
from bench.engine.math_oracle import MathOracle, MathOracleError
from bench.engine.model import make_inputs
from bench.engine.oracle_base import Edits, _bits
from bench.engine.sources.adapters import resolve_adapter
from bench.engine.sources.models import resolve_model
from bench.spec.schema import AdapterSpec, Workload
from bench.spec.state import AdapterState, Slot
from tests.engine.test_math_oracle import GPT2_SPECS, LLAMA_SPECS

FORWARD = Workload(kind="forward", batch_size=2, seq_len=16)
METHOD_SPECS = {
    "ia3": AdapterSpec(
        key="ia3",
        type="ia3",
        targets=("k_proj", "v_proj", "down_proj"),
        feedforward=("down_proj",),
        seed=7,
        init_std=0.2,
    ),
    "adalora": AdapterSpec(key="adalora", type="adalora", rank=4, targets=("q_proj", "up_proj"), seed=8),
}


@pytest.fixture(scope="module")
def world(cache_root):
    models = {name: resolve_model(f"builtin:{name}", cache_root) for name in ("tiny-llama", "tiny-gpt2")}
    adapters = {}
    for name, specs in (("tiny-llama", {**LLAMA_SPECS, **METHOD_SPECS}), ("tiny-gpt2", GPT2_SPECS)):
        for key, spec in specs.items():
            adapters[key] = resolve_adapter(spec, models[name], cache_root).location
    return models, adapters


def _oracle(world, model="tiny-llama", precision="fp32", workload=FORWARD, device="cpu") -> MathOracle:
    models, adapters = world
    inputs = make_inputs(workload, 1000, device)
    return MathOracle(models[model].location, precision, device, inputs, workload, adapters)


def _state(*pairs, active=None, enabled=True) -> AdapterState:
    slots = tuple(Slot(name, key, added) for name, key, added in pairs)
    return AdapterState(slots=slots, active=tuple(active or (slots[-1].name,)), enabled=enabled)


LLAMA_STATES = [
    _state(("a", "patterns", False)),
    _state(("a", "head", False)),  # modules_to_save: lm_head replaced
    _state(("a", "patterns", False), ("b", "second", False), active=("a", "b")),
    _state(("a", "ia3", False)),
    _state(("a", "adalora", False)),
    AdapterState(),
    _state(("a", "patterns", False), ("b", "second", True), active=("a", "b")),  # an added slot
    _state(("a", "ia3", False), ("b", "second", False), active=("a", "b")),  # IA3 and LoRA on one model
    _state(("a", "patterns", False)),  # again, after every other edit was undone
]


def _shared_and_fresh(oracle: MathOracle, states) -> tuple[list, list, MathOracle]:
    """Each state's logits (and generated tokens) on one base, and from a fresh model per state."""
    fresh = dataclasses.replace(oracle, _logits={}, _tokens={}, _gen_logits={})
    shared_out, fresh_out = [], []
    with oracle.one_base() as base:
        for i, state in enumerate(states):
            oracle._logits.clear()  # each state computed, not read from the cache (the last repeats the first)
            oracle._tokens.clear()
            shared_out.append((oracle.logits(state), oracle._tokens.get(state.key)))
            assert base.misses == 0, (i, state.description)
    for state in states:
        fresh._logits.clear()
        fresh_out.append((fresh.logits(state), fresh._tokens.get(state.key)))
    return shared_out, fresh_out, fresh


@pytest.mark.parametrize("precision", ["fp32", "bf16", "nf4"])
def test_one_base_equals_a_fresh_model_per_state_bit_for_bit(world, precision):
    oracle = _oracle(world, precision=precision)
    shared, fresh, fresh_oracle = _shared_and_fresh(oracle, LLAMA_STATES)
    for state, (got, _), (want, _) in zip(LLAMA_STATES, shared, fresh, strict=True):
        assert torch.equal(got, want), state.description
    assert oracle.fresh_loads == 1 and fresh_oracle.fresh_loads == len(LLAMA_STATES)
    # The control: the states differ from each other, so "equal" is not "all the base".
    base = fresh[LLAMA_STATES.index(AdapterState())][0]
    assert sum(not torch.equal(got, base) for got, _ in shared) == len(LLAMA_STATES) - 1  # all but the base


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_check.sh)")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8", "nf4"])
def test_one_base_on_cuda_equals_a_fresh_model_per_state_bit_for_bit(world, precision):
    """On a GPU: fp32 and bf16 copy the merged CPU base to the device per state; int8 and nf4 keep the
    quantized base on the device and hook it."""
    oracle = _oracle(world, precision=precision, device="cuda")
    states = [LLAMA_STATES[i] for i in (0, 1, 3, 5, 7, 8)]
    shared, fresh, _ = _shared_and_fresh(oracle, states)
    for state, (got, _), (want, _) in zip(states, shared, fresh, strict=True):
        assert torch.equal(got, want), state.description
    assert oracle.fresh_loads == 1


@pytest.mark.parametrize("repacks", [True, False])
def test_a_repacking_base_is_settled_before_its_fingerprint(world, monkeypatch, repacks):
    """bitsandbytes repacks 4-bit weights on the first forward on a CPU with avx512_bf16 (the nf4 case above
    runs it on such a CPU: without the settling forward its first undo missed). Here the host fact is set
    either way (our own function, not the library), and the shared base gets that one forward only where it
    holds; the states still equal a fresh model per state."""
    monkeypatch.setattr(oracle_base, "repacks_on_first_forward", lambda precision, device: repacks)
    oracle = _oracle(world)
    calls = []
    load = oracle._load

    def counted():
        model = load()
        model.register_forward_hook(lambda *_: calls.append(1))
        return model

    monkeypatch.setattr(oracle, "_load", counted)
    with oracle.one_base() as base:
        base.take()
        assert len(calls) == (1 if repacks else 0)
    states = LLAMA_STATES[:2]
    shared, fresh, _ = _shared_and_fresh(oracle, states)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(shared, fresh, strict=True))


def test_one_base_ties_and_generate(world):
    """GPT-2: Conv1D deltas and a modules_to_save copy of lm_head, which is tied to the embeddings (the copy
    unties it; the undo must tie it back), under generate (tokens and per-step logits)."""
    wl = Workload(kind="generate", batch_size=2, seq_len=8, new_tokens=4)
    oracle = _oracle(world, "tiny-gpt2", workload=wl)
    states = [_state(("a", "conv", False)), _state(("a", "square", False)), AdapterState()]
    shared, fresh, _ = _shared_and_fresh(oracle, states)
    for (got, got_tokens), (want, want_tokens) in zip(shared, fresh, strict=True):
        assert torch.equal(got, want) and torch.equal(got_tokens, want_tokens)
    assert oracle.fresh_loads == 1
    with oracle.one_base() as base:
        model = base.take()
        assert model.lm_head.weight is model.transformer.wte.weight


def test_a_refused_state_is_undone_too(world):
    """Two saved copies of lm_head: refused after the first copy was put in; the undo still restores it."""
    oracle = _oracle(world)
    with oracle.one_base() as base:
        with pytest.raises(MathOracleError, match="both replace"):
            oracle.logits(_state(("a", "head", False), ("b", "head2", False), active=("a", "b")))
        got = oracle.logits(AdapterState())
        assert base.misses == 0
    fresh = dataclasses.replace(oracle, _logits={}, fresh_loads=0)
    assert torch.equal(got, fresh.logits(AdapterState()))
    assert oracle.fresh_loads == 1 and fresh.fresh_loads == 1


def test_the_base_is_released_and_never_shared_by_a_copy(world):
    oracle = _oracle(world)
    with oracle.one_base() as base:
        oracle.logits(_state(("a", "patterns", False)))
        assert base.model is not None
        # a copy (another precision, other inputs) loads its own base
        assert dataclasses.replace(oracle)._shared is None
    assert base.model is None and oracle._shared is None


# Negative controls: a missed undo ------------------------------------------------------------------------


def _forget_one(part: str):
    """A planted bug in the undo: the first kept weight, replaced parameter or hook is left as the state set it."""
    real = Edits.undo

    def undo(self):
        if part == "kept":
            self._kept = dict(list(self._kept.items())[1:])
        elif part == "replaced":
            self._replaced = self._replaced[1:]
        else:
            self._hooks = self._hooks[1:]
        real(self)

    return undo


MISSES = {
    "kept": ("fp32", _state(("a", "patterns", False))),
    "replaced": ("fp32", _state(("a", "head", False))),
    "hooks": ("nf4", _state(("a", "second", False))),
}


@pytest.mark.parametrize("part", list(MISSES))
def test_a_missed_undo_is_caught_and_costs_a_reload_not_a_wrong_result(world, monkeypatch, part):
    precision, state = MISSES[part]
    want = _oracle(world, precision=precision).logits(AdapterState())
    monkeypatch.setattr(Edits, "undo", _forget_one(part))
    oracle = _oracle(world, precision=precision)
    with oracle.one_base() as base:
        oracle.logits(state)
        assert base.misses == 1 and base.model is None  # caught: the edited base was dropped
        assert torch.equal(oracle.logits(AdapterState()), want)  # from a new base
    assert oracle.fresh_loads == 2


@pytest.mark.parametrize("part", list(MISSES))
def test_without_the_fingerprint_a_missed_undo_gives_wrong_logits(world, monkeypatch, part):
    """The control of the control: the same planted miss, the check switched off, and the next state is wrong."""
    precision, state = MISSES[part]
    want = _oracle(world, precision=precision).logits(AdapterState())
    monkeypatch.setattr(Edits, "undo", _forget_one(part))
    monkeypatch.setattr(oracle_base, "fingerprint", lambda model: {})
    oracle = _oracle(world, precision=precision)
    with oracle.one_base() as base:
        oracle.logits(state)
        assert not torch.equal(oracle.logits(AdapterState()), want)
        assert base.misses == 0


def test_an_edit_made_without_keep_is_caught(world, monkeypatch):
    """A merge that changes a weight in place without Edits.keep (a new method's code that forgot it)."""
    want = _oracle(world).logits(AdapterState())
    monkeypatch.setattr(Edits, "keep", lambda self, tensor: tensor)
    oracle = _oracle(world)
    with oracle.one_base() as base:
        oracle.logits(_state(("a", "patterns", False)))
        assert base.misses == 1
        assert torch.equal(oracle.logits(AdapterState()), want)


# Pure ----------------------------------------------------------------------------------------------------


def test_subtracting_the_delta_back_is_not_exact_and_the_bit_sum_sees_one_ulp():
    """Why the undo copies: (W + d) - d != W for some elements in fp32; and the fingerprint's checksum
    changes with a single element moved by one ulp (in fp32 and bf16)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 64, generator=g)
    d = 0.05 * torch.randn(64, 64, generator=g)
    assert not torch.equal((w + d) - d, w)
    for dtype in (torch.float32, torch.bfloat16):
        t = w.to(dtype)
        moved = t.clone()
        moved[3, 5] = torch.nextafter(moved[3, 5], torch.tensor(float("inf"), dtype=dtype))
        assert _bits(t) == _bits(t.clone()) and _bits(moved) != _bits(t)


# A serve step -------------------------------------------------------------------------------------------


def _serving_reference(cache_root, write_scenario, kind="forward"):
    from bench.engine.model import load_model
    from bench.engine.serving.check import ServingReference
    from tests.engine.test_serving import _serve

    s = _serve(write_scenario, kind=kind, alphas=(16, 32))
    model = resolve_model(s.model, cache_root)
    keys = ["fam0", "fam1", "fam2"]
    locations = {k: resolve_adapter(s.adapter(k), model, cache_root).location for k in keys}
    reference = ServingReference(
        fresh_base=lambda: load_model(model.location, "fp32", "cpu"), workload=s.workload, locations=locations
    )
    prompts = torch.randint(3, 200, (5, s.workload.seq_len), generator=torch.Generator().manual_seed(1))
    return reference, prompts, keys, s, model, locations


def test_the_serving_reference_one_adapter_at_a_time_equals_a_fresh_model_per_adapter(
    cache_root, write_scenario
):
    """The serve step's library reference: one fresh base holding one adapter at a time (the previous one
    deleted), gives each adapter's logits bit for bit as a fresh model loaded with that adapter alone
    (bench.engine.reference.ReferenceOracle, one model per state), in any order of loads, and again for an
    adapter loaded a second time after the others."""
    from bench.engine.model import Inputs
    from bench.engine.reference import ReferenceOracle

    reference, prompts, keys, s, model, locations = _serving_reference(cache_root, write_scenario)
    everything = set(range(len(prompts)))
    shared = {}
    for key in reversed(keys):  # fam2, fam1, fam0: each loaded after the previous one was deleted
        reference.ensure({key: everything}, prompts)
        shared[key] = torch.stack([reference.response(key, p, prompts).logits for p in sorted(everything)])
        assert list(reference._model.peft_config) == [key]  # one adapter at a time
    assert reference.loads == len(keys)
    back = reference.forward_logits(keys[-1], prompts)  # fam2 again, after fam1 and fam0 were loaded
    assert reference.loads == len(keys) + 1
    fresh = ReferenceOracle(
        model.location, "fp32", "cpu", Inputs(prompts, torch.ones_like(prompts)), s.workload, locations, {}
    )
    for key in keys:
        want = fresh.logits(AdapterState(slots=(Slot(key, key, False),), active=(key,)))
        assert torch.equal(shared[key], want), key
    assert torch.equal(back, shared[keys[-1]])
    assert fresh.fresh_loads == len(keys)
    assert not torch.equal(shared[keys[0]], shared[keys[1]])  # the control: the adapters differ


def test_generate_references_load_each_adapter_once(cache_root, write_scenario):
    """A generate step also needs each adapter's forward logits for the math oracle: `ensure` computes them
    while the adapter is loaded, so library_logits afterwards loads nothing and calls nothing."""
    reference, prompts, keys, *_ = _serving_reference(cache_root, write_scenario, kind="generate")
    oracle_prompts = (3, 1)
    reference.ensure({k: {0, 1, 3} for k in keys}, prompts, forward_of=oracle_prompts)
    loads, calls = reference.loads, reference.calls
    assert loads == len(keys) and calls == len(keys) * 3 + len(
        keys
    )  # one prompt per generate call, 1 forward
    got = {k: reference.library_logits(k, oracle_prompts, prompts) for k in keys}
    assert (reference.loads, reference.calls) == (loads, calls)
    for k in keys:  # the same bits as a forward of those prompts made now
        assert torch.equal(got[k], reference.forward_logits(k, prompts[list(oracle_prompts)]))
    # The control: without forward_of, each adapter is loaded again for its forward logits.
    again, prompts, keys, *_ = _serving_reference(cache_root, write_scenario, kind="generate")
    again.ensure({k: {0, 1, 3} for k in keys}, prompts)
    for k in keys:
        again.library_logits(k, oracle_prompts, prompts)
    assert again.loads == 2 * len(keys)


def test_a_delete_adapter_that_leaves_the_old_adapter_behind_fails_the_math(
    cache_root, write_scenario, monkeypatch
):
    """Negative control for the reference's own API: a planted `delete_adapter` that leaves the deleted
    adapter's delta in the base weights (merged before the delete) makes every later reference wrong; the math
    oracle, which uses no peft, fails the step."""
    from peft.tuners.lora import LoraLayer
    from transformers.integrations.peft import PeftAdapterMixin

    from bench.spec.cases import expand
    from bench.worker.execute import run_case
    from tests.engine.test_serving import _serve

    real = PeftAdapterMixin.delete_adapter

    def planted(self, adapter_names):
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        for module in self.modules():
            if isinstance(module, LoraLayer):
                module.merge(adapter_names=[n for n in names if n in module.lora_A])
        return real(self, adapter_names)

    case = expand(_serve(write_scenario, strategy="side_by_side", alphas=(16, 32)))[0]
    clean = run_case(case, cache_root)
    monkeypatch.setattr(PeftAdapterMixin, "delete_adapter", planted)
    bad = run_case(case, cache_root)
    for result, want in ((clean, "pass"), (bad, "fail")):
        (step,) = result.steps
        (o,) = [o for o in step.outcomes if o.expectation == "oracles_agree"]
        assert o.status == want, (want, o)
    assert clean.verdict == "pass" and bad.verdict == "fail"
    assert bad.steps[0].serving.figures.wrong_responses > 0  # the responses were right: the reference is not


@pytest.mark.parametrize(
    ("dtype", "conv1d"), [(torch.float32, False), (torch.float32, True), (torch.bfloat16, False)]
)
def test_the_in_place_merge_is_the_same_arithmetic_as_w_plus_scaling_b_a(dtype, conv1d):
    """_merge_deltas adds the delta in place (fp32) to save two weight-sized buffers per module: the result is
    bit for bit the formula it replaced, (W.float() + scaling * (B @ A)).to(W.dtype), transposed or not. Two
    modules of one shape: the second delta is computed in the first one's buffer (lora_delta's scratch). The
    transposed layout is GPT-2's Conv1D, weight (in, out): peft transposes by the layer's type."""
    from transformers.pytorch_utils import Conv1D

    from bench.engine.lora_files import AdapterWeights, LoraModule
    from bench.engine.math_oracle import _merge_deltas

    g = torch.Generator().manual_seed(3)
    out_f, in_f, r = 96, 80, 8
    modules, loras, want, before = {}, [], {}, {}
    for name, scaling in (("m", 1.7), ("n", 0.3)):
        a, b = 0.1 * torch.randn(r, in_f, generator=g), 0.1 * torch.randn(out_f, r, generator=g)
        linear = Conv1D(out_f, in_f) if conv1d else torch.nn.Linear(in_f, out_f)  # (in, out) or (out, in)
        linear.weight.requires_grad_(False).copy_(torch.randn(linear.weight.shape, generator=g))
        linear.to(dtype)
        before[name] = linear.weight.detach().clone()
        delta = scaling * (b @ a)
        want[name] = (before[name].float() + (delta.T if conv1d else delta)).to(dtype)
        modules[name] = linear
        loras.append(LoraModule(name, a, b, r, r * scaling, scaling))
    adapter = AdapterWeights("x", tuple(loras), ())
    with torch.no_grad():
        _merge_deltas(modules, [adapter], Edits(record=False))
    for name, linear in modules.items():
        assert torch.equal(linear.weight, want[name]), name
        assert not torch.equal(linear.weight, before[name])  # the control: the merge moved the weight
