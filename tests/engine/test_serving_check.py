"""A serve step's references in batches (bench/engine/serving/check.py, ServingReference.ensure): one forward
call per adapter, equal bit for bit to one call per prompt; generate one prompt per call; a batch that is not
exact switches batching off; and the count of wrong responses of a real bug does not move with batching."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.engine.model import load_model
from bench.engine.serving.check import ServingReference
from bench.engine.sources.adapters import resolve_adapter
from bench.engine.sources.models import resolve_model
from bench.scenario import load_scenario
from bench.spec.cases import expand
from bench.worker.execute import run_case
from tests.engine.test_serving import _record, _serve

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _reference(
    cache_root, write_scenario, kind: str, rows: int
) -> tuple[ServingReference, object, list[str]]:
    import torch

    s = _serve(write_scenario, kind=kind, alphas=(16, 32))
    model = resolve_model(s.model, cache_root)
    keys = ["fam0", "fam1", "fam2"]
    locations = {k: resolve_adapter(s.adapter(k), model, cache_root).location for k in keys}
    reference = ServingReference(
        fresh_base=lambda: load_model(model.location, "fp32", "cpu"),
        workload=s.workload,
        locations=locations,
        rows=rows,
    )
    prompts = torch.randint(3, 200, (5, s.workload.seq_len), generator=torch.Generator().manual_seed(1))
    return reference, prompts, keys


def _all(reference, prompts, keys):
    reference.ensure({k: set(range(len(prompts))) for k in keys}, prompts)
    return {(k, p): reference.response(k, p, prompts) for k in keys for p in range(len(prompts))}


def test_batched_forward_references_equal_one_prompt_calls_bit_for_bit(cache_root, write_scenario):
    import torch

    batched, prompts, keys = _reference(cache_root, write_scenario, "forward", rows=16)
    alone, _, _ = _reference(cache_root, write_scenario, "forward", rows=1)
    a, b = _all(batched, prompts, keys), _all(alone, prompts, keys)
    assert all(torch.equal(a[k].logits, b[k].logits) for k in a)
    assert batched.exact_batches is True and not batched.notes
    # One call per adapter (and the one-prompt probe of the first batch), against one per prompt.
    assert batched.calls == len(keys) + 1 and alone.calls == len(keys) * len(prompts)
    # Negative control: the references of two adapters differ, so equal means equal, not "all the same".
    assert not torch.equal(a[("fam0", 0)].logits, a[("fam1", 0)].logits)


def test_generate_references_are_one_prompt_per_call(cache_root, write_scenario):
    """Batched decode steps run a one-row matmul on several rows, which is not bit-exact on CPU: never batched."""
    reference, prompts, keys = _reference(cache_root, write_scenario, "generate", rows=16)
    out = _all(reference, prompts, keys)
    assert reference.calls == len(keys) * len(prompts) and reference.exact_batches is None
    assert all(r.tokens is not None and r.tokens.shape == (3,) for r in out.values())


def test_a_batch_that_is_not_exact_switches_batching_off(cache_root, write_scenario, monkeypatch):
    """Negative control for the probe: a planted batched call whose rows after the first are 1 ulp off."""
    import torch

    import bench.engine.serving.check as check

    real = check.model_call

    def planted(forward, model, workload, input_ids, **kwargs):
        logits, tokens = real(forward, model, workload, input_ids, **kwargs)
        if input_ids.shape[0] > 1:
            logits = logits.clone()
            logits[1:] = torch.nextafter(logits[1:], torch.full_like(logits[1:], float("inf")))
        return logits, tokens

    monkeypatch.setattr(check, "model_call", planted)
    reference, prompts, keys = _reference(cache_root, write_scenario, "forward", rows=16)
    got = _all(reference, prompts, keys)
    assert reference.exact_batches is False and reference.rows == 1
    assert "batched references differ from one-prompt calls" in reference.notes[0]
    monkeypatch.setattr(check, "model_call", real)
    alone, _, _ = _reference(cache_root, write_scenario, "forward", rows=1)
    want = _all(alone, prompts, keys)
    assert all(torch.equal(got[k].logits, want[k].logits) for k in got)  # every reference unbatched


def _transformers_hotswap(cache_root):
    s = load_scenario(REPO / "scenarios" / "serving.toml")
    (case,) = [c for c in expand(s) if c.id == "serving-small[fp32-none-hotswap-transformers]"]
    return run_case(case, cache_root)


def test_batching_leaves_the_wrong_responses_of_the_transformers_bug_unchanged(cache_root, monkeypatch):
    """scenarios/serving.toml's transformers hotswap answers 14 of 32 requests wrongly (the kept alpha):
    checked with batched references and with one reference call per prompt, the same requests are wrong, by
    the same differences."""
    import bench.engine.serving.evidence as evidence

    batched = _record(_transformers_hotswap(cache_root))[1]
    monkeypatch.setattr(evidence, "REFERENCE_ROWS", 1)
    alone = _record(_transformers_hotswap(cache_root))[1]
    assert batched.figures.wrong_responses == alone.figures.wrong_responses == 14
    assert batched.figures.checked_responses == 32
    assert [(q.id, q.matches, q.max_abs_diff) for q in batched.requests] == [
        (q.id, q.matches, q.max_abs_diff) for q in alone.requests
    ]
    served = len({q.adapter for q in batched.requests})
    assert batched.reference_calls == served + 1  # one forward per adapter, and the probe
    assert alone.reference_calls > batched.reference_calls
    for sv in (batched, alone):
        assert sv.serve_s > 0 and sv.check_s > 0
        parts = sv.check_load_s + sv.check_responses_s + sv.check_oracle_s
        assert sv.check_s == pytest.approx(parts, rel=1e-6)


def _check_under_watch(cache_root, write_scenario, monkeypatch) -> tuple[list[bool], int, bool]:
    """A side_by_side serve step run as a case, and while its check built the references: whether the
    collector was on at each reference load, and how many collector passes ran from the first load until the
    reference was closed; then whether the collector is on after the case."""
    import gc

    watched = {"on_at_load": [], "passes": 0, "inside": False}
    activate, close = ServingReference._activate, ServingReference.close

    def watched_activate(self, adapter):
        watched["on_at_load"].append(gc.isenabled())
        watched["inside"] = True
        return activate(self, adapter)

    def watched_close(self):
        watched["inside"] = False
        return close(self)

    def count(phase, info):
        if phase == "start" and watched["inside"]:
            watched["passes"] += 1

    (case,) = expand(_serve(write_scenario))
    with monkeypatch.context() as m:  # undone on the way out: the next call wraps the real methods again
        m.setattr(ServingReference, "_activate", watched_activate)
        m.setattr(ServingReference, "close", watched_close)
        gc.callbacks.append(count)
        try:
            result = run_case(case, cache_root)
        finally:
            gc.callbacks.remove(count)
    step, sv = _record(result)
    assert sv.figures.checked_responses > 0 and sv.figures.wrong_responses == 0, step
    return watched["on_at_load"], watched["passes"], gc.isenabled()


def test_the_collector_is_off_while_a_serve_step_is_checked(cache_root, write_scenario, monkeypatch):
    """The check's reference loads make thousands of module objects and no cycle: no collector pass runs while
    the references are built (bench.worker.evidence.gather_evidence), and the collector is on again after.
    Negative control: with the pause taken out, the same case's check does set off passes."""
    import contextlib

    import bench.worker.evidence as evidence

    on_at_load, passes, on_after = _check_under_watch(cache_root, write_scenario, monkeypatch)
    assert on_at_load and not any(on_at_load) and passes == 0 and on_after

    monkeypatch.setattr(evidence, "collector_paused", contextlib.nullcontext)
    on_at_load, passes, on_after = _check_under_watch(cache_root, write_scenario, monkeypatch)
    assert on_at_load and all(on_at_load) and passes > 0 and on_after
