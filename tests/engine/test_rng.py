"""A case's seeded figures do not depend on whether its sources were cached (bench/engine/rng.py).

The same LoRA training case (train_lora.toml: add_adapter, dropout 0.05, 20 AdamW steps, save, reload) runs
once on an empty cache, where the model and the adapter are built, and once on the warm cache. Its train
losses, every deterministic figure of its records, the trained adapter's weights and the trained model's
forward output on the workload inputs must be identical. The build gets a planted draw from torch's global
generator, so the test does not rest on peft's own init happening to draw there. Each of the two rules
(builds on a private copy; consumers reseed before they draw) is enough on its own; the control turns
both off, as before the fix, and the planted draw then moves the losses.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import load_file

from bench.engine import rng
from bench.engine.model import load_model, make_inputs, vocab_size_of
from bench.engine.sources import adapters as adapter_sources
from bench.engine.sources.models import resolve_model
from bench.scenario import load_scenario
from bench.spec.cases import expand
from bench.worker.execute import run_case
from tests.conftest import SCENARIOS
from tests.engine.test_determinism import deterministic


@dataclass(frozen=True)
class Figures:
    losses: tuple[float, float, float, float]  # loss_first, loss_last, fixed batch before, after
    records: dict  # tests.engine.test_determinism.deterministic: outputs, outcomes, counts
    weights: tuple[tuple[str, bytes], ...]  # the saved trained adapter, tensor by tensor
    logits: bytes  # the trained model's forward on the workload inputs


def _case(tmp_path):
    text = (SCENARIOS / "train_lora.toml").read_text()
    assert 'precision = ["fp32", "bf16"]' in text and "lora_dropout = 0.05" in text
    path = tmp_path / "train.toml"
    path.write_text(text.replace('precision = ["fp32", "bf16"]', 'precision = ["fp32"]'))
    (case,) = expand(load_scenario(path))
    return case


def _figures(case, cache, work) -> Figures:
    result = run_case(case, cache, work_dir=work)
    assert result.verdict == "pass", result.reason
    (t,) = [s.train for s in result.steps if s.train is not None]
    saved = work / "trained"
    weights = load_file(saved / "adapter_model.safetensors")
    model = load_model(resolve_model(case.scenario.model, cache).location, case.precision, "cpu")
    model.load_adapter(str(saved))
    inputs = make_inputs(case.scenario.workload, vocab_size_of(model), "cpu")
    with torch.no_grad():
        logits = model(**inputs.as_kwargs()).logits
    return Figures(
        losses=(t.loss_first, t.loss_last, t.fixed_batch_loss_before, t.fixed_batch_loss_after),
        records=deterministic(result),
        weights=tuple((k, v.numpy().tobytes()) for k, v in sorted(weights.items())),
        logits=logits.numpy().tobytes(),
    )


def _no_isolation(device: str = "cpu"):
    return contextlib.nullcontext()


def _no_reseed(seed: int, device: str = "cpu"):
    return contextlib.nullcontext()


RULES_OFF = {
    "both rules": {},
    "isolated builds only": {"seeded": _no_reseed},
    "reseeding consumers only": {"isolated": _no_isolation},
}


def _cold_then_warm(tmp_path, monkeypatch, off: dict):
    builds = []
    real_build = adapter_sources._build

    def drawing_build(spec, *args):
        builds.append(spec.key)
        torch.rand(1000)  # the planted draw from the global generator
        real_build(spec, *args)

    monkeypatch.setattr(adapter_sources, "_build", drawing_build)
    for name, replacement in off.items():
        monkeypatch.setattr(rng, name, replacement)
    case, cache = _case(tmp_path), tmp_path / "cache"
    cold = _figures(case, cache, tmp_path / "cold")
    assert builds == ["lora"]  # the cold run built the adapter (with its draw) ...
    warm = _figures(case, cache, tmp_path / "warm")
    assert builds == ["lora"]  # ... the warm one found it
    return cold, warm


@pytest.mark.parametrize("rules", RULES_OFF, ids=list(RULES_OFF))
def test_cold_and_warm_cache_give_the_same_figures(tmp_path, monkeypatch, rules):
    cold, warm = _cold_then_warm(tmp_path, monkeypatch, RULES_OFF[rules])
    assert cold.losses == warm.losses
    assert cold.records == warm.records
    assert cold.weights == warm.weights
    assert cold.logits == warm.logits
    # Dropout and A's init really enter the figures: the trained loss moved off the untrained one.
    assert cold.losses[1] != cold.losses[0]


def test_control_a_build_draw_that_reaches_the_case_moves_the_losses(tmp_path, monkeypatch):
    cold, warm = _cold_then_warm(tmp_path, monkeypatch, {"seeded": _no_reseed, "isolated": _no_isolation})
    assert cold.losses[0] == warm.losses[0]  # B = 0 at the first step: neither A nor dropout shows yet
    assert cold.losses[1] != warm.losses[1]
    assert cold.weights != warm.weights
    assert cold.logits != warm.logits


def test_seeded_depends_on_the_seed_alone_and_leaves_the_state_outside():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    with rng.seeded(5):
        first = torch.rand(4)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.rand(10)  # whatever drew before
    with rng.seeded(5):
        again = torch.rand(4)
    with rng.seeded(6):
        other = torch.rand(4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)  # the control: the seed is what decides
    state = torch.random.get_rng_state()
    with rng.isolated():
        torch.rand(10)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.rand(10)
    assert not torch.equal(torch.random.get_rng_state(), state)  # the control: the same draw outside it
