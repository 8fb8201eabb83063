"""The bug catalogue's scenarios (docs/bug-catalogue.md) catch their class of bug.

Each scenario added for the catalogue is run through run_case with a bug of its class planted in peft or
transformers, and fails; the same case unplanted is the control (its shipped verdict: pass, or xfail where the
released library has the bug). The catalogue itself names only scenario files that exist, and every catalogue
scenario.
"""

from __future__ import annotations

import re
from operator import attrgetter

import pytest
import torch

from bench.worker.execute import run_case
from tests.catalogue import failed_outcomes, planted_failures, shipped_case
from tests.conftest import REPO, SCENARIOS

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

CATALOGUE = REPO / "docs" / "bug-catalogue.md"

# The scenarios written for the catalogue (issue 28), each with its case for the planted bug.
NEW_SCENARIOS = (
    "hotswap_rank_11_11.toml",
    "hotswap_rank_7_13.toml",
    "hotswap_rank_13_7.toml",
    "hotswap_patterns.toml",
    "toggles_patterns.toml",
    "multi_active_delete.toml",
    "prefix_names.toml",
    "hotswap_merged.toml",
    "modules_to_save_toggles.toml",
    "hotswap_gemma.toml",
    "hotswap_inductor.toml",  # planted bug: tests/scenario/test_catalogue_inductor.py
    "moe_target_parameters.toml",
    "moe_target_parameters_prepare.toml",
    "dora.toml",  # the DoRA planted bugs: tests/scenario/test_catalogue_dora.py
    "dora_hotswap_compiled.toml",
    "lora_embeddings.toml",
    "lora_embeddings_saved_base.toml",
    "hotswap_shape_change.toml",
    "hotswap_modules_to_save.toml",
)


# ----- planted bugs, one per class


def _plant_stale_rank_tail(monkeypatch) -> None:
    """peft's hotswap to a smaller rank keeps the old adapter's rows and columns beyond the new rank."""
    import peft.utils.hotswap as peft_hotswap

    original = peft_hotswap.hotswap_adapter_from_state_dict

    def planted(model, state_dict, adapter_name, config, *args, **kwargs):
        old = {k: attrgetter(k)(model).detach().clone() for k in state_dict}
        out = original(model, state_dict, adapter_name, config, *args, **kwargs)
        with torch.no_grad():
            for key, new in state_dict.items():
                weight = attrgetter(key)(model)
                if ".lora_A." in key and new.shape[0] < weight.shape[0]:
                    weight[new.shape[0] :].copy_(old[key][new.shape[0] :])
                if ".lora_B." in key and new.shape[1] < weight.shape[1]:
                    weight[:, new.shape[1] :].copy_(old[key][:, new.shape[1] :])
        return out

    monkeypatch.setattr(peft_hotswap, "hotswap_adapter_from_state_dict", planted)


def _plant_ignored_alpha_pattern(monkeypatch) -> None:
    """LoRA layers take the config's lora_alpha whatever alpha_pattern says (subject and reference alike)."""
    from peft.tuners.lora.layer import LoraLayer

    original = LoraLayer.update_layer

    def planted(self, adapter_name, r, lora_alpha, config, **kwargs):
        return original(self, adapter_name, r, lora_alpha=config.lora_alpha, config=config, **kwargs)

    monkeypatch.setattr(LoraLayer, "update_layer", planted)


def _plant_set_adapter_first_only(monkeypatch) -> None:
    """set_adapter([a, b]) activates only a (subject and reference alike: the math oracle sees it)."""
    from transformers.integrations.peft import PeftAdapterMixin

    original = PeftAdapterMixin.set_adapter

    def planted(self, adapter_name):
        if isinstance(adapter_name, list):
            adapter_name = adapter_name[:1]
        return original(self, adapter_name)

    monkeypatch.setattr(PeftAdapterMixin, "set_adapter", planted)


def _plant_delete_by_prefix(monkeypatch) -> None:
    """delete_adapter("a") also deletes every adapter whose name starts with "a"."""
    from transformers.integrations.peft import PeftAdapterMixin

    original = PeftAdapterMixin.delete_adapter

    def planted(self, adapter_names):
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        loaded = list(self.peft_config)
        every = [n for n in loaded if any(n.startswith(p) for p in names)]
        return original(self, every)

    monkeypatch.setattr(PeftAdapterMixin, "delete_adapter", planted)


def _plant_swap_into_merged(monkeypatch) -> None:
    """peft's hotswap no longer refuses a merged adapter: it swaps under the merged delta."""
    import peft.utils.hotswap as peft_hotswap
    from peft.tuners.tuners_utils import BaseTunerLayer

    original = peft_hotswap.hotswap_adapter_from_state_dict

    def planted(model, *args, **kwargs):
        layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
        merged = [list(m.merged_adapters) for m in layers]
        for m in layers:
            m.merged_adapters.clear()
        try:
            return original(model, *args, **kwargs)
        finally:
            for m, names in zip(layers, merged, strict=True):
                m.merged_adapters.extend(names)

    monkeypatch.setattr(peft_hotswap, "hotswap_adapter_from_state_dict", planted)


def _plant_disable_keeps_saved_copies(monkeypatch) -> None:
    """disable_adapters() leaves the modules_to_save copies on (only the LoRA layers are bypassed)."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers.integrations.peft import PeftAdapterMixin

    def planted(self):
        for module in self.modules():
            if isinstance(module, BaseTunerLayer):
                module.enable_adapters(enabled=False)

    monkeypatch.setattr(PeftAdapterMixin, "disable_adapters", planted)


def _plant_swap_drops_soft_capping(monkeypatch) -> None:
    """peft's hotswap loses a gemma quirk: the model's final logit soft-capping is off after the swap (what
    a swap that rebuilt the config from defaults would do)."""
    import peft.utils.hotswap as peft_hotswap

    original = peft_hotswap.hotswap_adapter_from_state_dict

    def planted(model, *args, **kwargs):
        out = original(model, *args, **kwargs)
        model.config.final_logit_softcapping = None
        return out

    monkeypatch.setattr(peft_hotswap, "hotswap_adapter_from_state_dict", planted)


PLANTED = {
    "rank": ("hotswap_rank_13_7.toml", "hotswap-rank-13-7[fp32-aot_eager-peft]", _plant_stale_rank_tail),
    "patterns-swap": (
        "hotswap_patterns.toml",
        "hotswap-patterns[fp32-aot_eager-transformers]",
        _plant_ignored_alpha_pattern,
    ),
    "patterns-toggle": ("toggles_patterns.toml", "toggles-patterns[fp32-none]", _plant_ignored_alpha_pattern),
    "multi-active": (
        "multi_active_delete.toml",
        "multi-active-delete[fp32-none]",
        _plant_set_adapter_first_only,
    ),
    "prefix-delete": (
        "prefix_names.toml",
        "prefix-names[fp32-none-transformers]",
        _plant_delete_by_prefix,
    ),
    "merged": ("hotswap_merged.toml", "hotswap-merged[fp32-none-peft]", _plant_swap_into_merged),
    "modules-to-save": (
        "modules_to_save_toggles.toml",
        "modules-to-save-toggles[fp32-none]",
        _plant_disable_keeps_saved_copies,
    ),
    "gemma-quirk": (
        "hotswap_gemma.toml",
        "hotswap-gemma[fp32-aot_eager-peft]",
        _plant_swap_drops_soft_capping,
    ),
}

# What each planted bug must break, beyond the verdict: (step, expectation) that fails.
BROKEN = {
    "rank": (5, "matches_reference"),
    "patterns-swap": (2, "oracles_agree"),
    "patterns-toggle": (1, "oracles_agree"),
    "multi-active": (3, "oracles_agree"),
    "prefix-delete": (10, "matches_reference"),
    "merged": (4, "raises"),
    "modules-to-save": (2, "matches_reference"),
    "gemma-quirk": (6, "matches_reference"),
}

CONTROL = {
    "rank": "pass",
    "patterns-swap": "xfail",
    "patterns-toggle": "pass",
    "multi-active": "pass",
    "prefix-delete": "xfail",
    "merged": "pass",
    "modules-to-save": "xfail",
    "gemma-quirk": "pass",
}


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_a_planted_bug_of_the_class_fails_the_scenario(kind, cache_root, monkeypatch):
    failed = planted_failures(PLANTED[kind], cache_root, monkeypatch)
    assert BROKEN[kind] in failed, failed


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_unplanted_the_same_case_keeps_its_shipped_verdict(kind, cache_root):
    file_name, case_id, _ = PLANTED[kind]
    r = run_case(shipped_case(file_name, case_id), cache_root)
    assert r.verdict == CONTROL[kind], (r.verdict, r.reason)
    assert failed_outcomes(r) == []


def test_a_rank_pair_swap_through_peft_passes_both_directions(cache_root):
    """(7, 13) and (11, 11) through peft: the correct library's rank pairs, the controls of the other pairs."""
    for file_name, case_id in (
        ("hotswap_rank_7_13.toml", "hotswap-rank-7-13[fp32-aot_eager-peft]"),
        ("hotswap_rank_11_11.toml", "hotswap-rank-11-11[fp32-aot_eager-peft]"),
    ):
        r = run_case(shipped_case(file_name, case_id), cache_root)
        assert r.verdict == "pass", (case_id, r.reason)


# ----- the catalogue document


def _cited() -> set[str]:
    return set(re.findall(r"scenarios/[A-Za-z0-9_.\-/]+\.toml", CATALOGUE.read_text(encoding="utf-8")))


def test_every_scenario_the_catalogue_cites_exists():
    cited = _cited()
    assert cited, "the catalogue cites no scenario"
    assert sorted(c for c in cited if not (REPO / c).is_file()) == []


def test_the_catalogue_cites_every_catalogue_scenario():
    cited = _cited()
    assert sorted(f"scenarios/{n}" for n in NEW_SCENARIOS if f"scenarios/{n}" not in cited) == []
    for name in NEW_SCENARIOS:
        assert (SCENARIOS / name).is_file(), name
