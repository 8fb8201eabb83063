"""The catalogue's shape-change and modules_to_save hotswap scenarios (docs/bug-catalogue.md) catch their bugs.

As tests/scenario/test_catalogue.py does for the other classes: each scenario runs through run_case with a bug of
its class planted in peft or transformers and fails on the step that shows it; the same case unplanted is the
control and keeps its shipped verdict. The controls also show the shape machinery at work: a forward on its
own shape is compared with references computed on that shape by both oracles (a reference of another shape
could not match), and under dynamic=False a new shape's one recompile is expected and passes.
"""

from __future__ import annotations

import pytest
import torch

from bench.worker.execute import run_case
from tests.catalogue import failed_outcomes, planted_failures, shipped_case

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

SHAPE = "hotswap_shape_change.toml"
SAVED_COPY = "hotswap_modules_to_save.toml"
WORKLOAD_SEQ_LEN = 16  # the shape scenario's workload: batch 2 x 16 tokens


def _plant_swap_pins_the_sequence_length(monkeypatch) -> None:
    """peft's hotswap leaves every swapped LoRA layer pinned to the workload's sequence length: on a sequence of
    any other length the layer runs its base weights alone, so the swapped-in adapter is lost there (and under
    dynamic=True the length test specializes the graph on the length)."""
    import peft.utils.hotswap as peft_hotswap
    from peft.tuners.lora.layer import Linear

    original_swap = peft_hotswap.hotswap_adapter_from_state_dict
    original_forward = Linear.forward

    def swap(model, *args, **kwargs):
        out = original_swap(model, *args, **kwargs)
        for module in model.modules():
            if isinstance(module, Linear):
                module.planted_seq_len = WORKLOAD_SEQ_LEN
        return out

    def forward(self, x, *args, **kwargs):
        pinned = getattr(self, "planted_seq_len", None)
        if pinned is not None and x.shape[-2] != pinned:
            return self.base_layer(x, *args, **kwargs)
        return original_forward(self, x, *args, **kwargs)

    monkeypatch.setattr(peft_hotswap, "hotswap_adapter_from_state_dict", swap)
    monkeypatch.setattr(Linear, "forward", forward)


def _plant_swap_keeps_the_saved_copy(monkeypatch) -> None:
    """transformers' load_adapter(hotswap=True) swaps the LoRA weights and leaves the modules_to_save copy (the
    lm_head) as the first adapter saved it: what the catalogue feared a swap would silently do."""
    from transformers.integrations.peft import PeftAdapterMixin

    original = PeftAdapterMixin.load_adapter

    def planted(self, *args, hotswap=False, **kwargs):
        if hotswap is not True:
            return original(self, *args, hotswap=hotswap, **kwargs)
        old = {n: p.detach().clone() for n, p in self.named_parameters() if ".modules_to_save." in n}
        out = original(self, *args, hotswap=hotswap, **kwargs)
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name, value in old.items():
                params[name].copy_(value)
        return out

    monkeypatch.setattr(PeftAdapterMixin, "load_adapter", planted)


PLANTED = {
    "shape-after-swap": (
        SHAPE,
        "hotswap-shape-change[fp32-aot_eager+dynamic-peft]",
        _plant_swap_pins_the_sequence_length,
    ),
    "stale-saved-copy": (
        SAVED_COPY,
        "hotswap-modules-to-save[fp32-aot_eager-transformers]",
        _plant_swap_keeps_the_saved_copy,
    ),
}

# What each planted bug must break: (step, expectation) pairs that fail.
BROKEN = {
    # step 6: the first forward on a new shape (3 x 24) after the swap: a recompile, and the adapter lost
    "shape-after-swap": {(6, "recompiles"), (6, "matches_reference")},
    # step 5: the swap's own check: the output of a fresh load of the second adapter, lm_head copy included
    "stale-saved-copy": {(5, "matches_reference")},
}

# The shipped verdicts (docs/bug-catalogue.md), and the steps whose outcome is an xfail there.
CONTROL = {
    "shape-after-swap": ("pass", set()),
    "stale-saved-copy": ("xfail", {(5, "swap_in_place")}),
    "saved-copy-peft": ("xfail", {(5, "succeeds")}),
    "shape-static": ("pass", set()),
}
CONTROL_CASES = {
    **{kind: (f, case_id) for kind, (f, case_id, _) in PLANTED.items()},
    "saved-copy-peft": (SAVED_COPY, "hotswap-modules-to-save[fp32-aot_eager-peft]"),
    "shape-static": (SHAPE, "hotswap-shape-change[fp32-aot_eager+static-peft]"),
}


def _xfailed(result) -> set[tuple[int, str]]:
    return {
        (i, o.expectation) for i, s in enumerate(result.steps, 1) for o in s.outcomes if o.status == "xfail"
    }


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_a_planted_bug_of_the_class_fails_the_scenario(kind, cache_root, monkeypatch):
    failed = planted_failures(PLANTED[kind], cache_root, monkeypatch)
    assert BROKEN[kind] <= set(failed), failed


@pytest.mark.parametrize("kind", sorted(CONTROL))
def test_unplanted_the_same_case_keeps_its_shipped_verdict(kind, cache_root):
    file_name, case_id = CONTROL_CASES[kind]
    r = run_case(shipped_case(file_name, case_id), cache_root)
    verdict, xfailed = CONTROL[kind]
    assert r.verdict == verdict, (r.verdict, r.reason)
    assert failed_outcomes(r) == []
    assert _xfailed(r) == xfailed, _xfailed(r)
    if kind.startswith("shape"):
        _check_the_shapes(r, static=kind == "shape-static")


def _check_the_shapes(result, *, static: bool) -> None:
    """Each shaped forward ran on its shape, was checked against both oracles on it, and cost what the compile
    setting says: one recompile per new shape under dynamic=False, none under dynamic=True."""
    shaped = {i: s for i, s in enumerate(result.steps, 1) if s.op == "forward" and s.args}
    assert {i: s.args for i, s in shaped.items()} == {
        6: {"batch_size": 3, "seq_len": 24},
        8: {"batch_size": 3, "seq_len": 24},
    }
    for i, s in shaped.items():
        assert s.output.matches and s.output.max_abs_diff is not None, (i, s.output)
        assert s.oracle_agreement is not None and s.oracle_agreement.agree, (i, s.oracle_agreement)
    recompiles = {i: result.steps[i - 1].compile.recompiles for i in (5, 6, 7, 8, 9)}
    assert recompiles == {5: 0, 6: int(static), 7: 0, 8: 0, 9: 0}
