"""Host-scoped known failures (bench.spec.host): a marker whose host facts do not all hold on this machine is
dropped before any step is decided, so the same scenario gives a true verdict on every CPU.

The facts are real probes (bitsandbytes' own check); the end-to-end tests add a fake fact to the registry to
choose both answers on any machine, and show the verdict each answer must give."""

from __future__ import annotations

import pytest

from bench.errors import ScenarioError
from bench.scenario import load_scenario
from bench.spec import host
from bench.spec.cases import expand
from bench.worker.execute import run_case
from tests.conftest import LOAD_A, SCENARIOS, scenario_toml


def _markers(scenario) -> list[str]:
    return [kf.reason for st in scenario.steps for kf in st.known_failures] + [
        kf.reason for kf in scenario.expect.known_failures
    ]


def test_scoping_keeps_a_marker_only_where_all_its_facts_hold():
    s = load_scenario(SCENARIOS / "quantized.toml")
    assert host.named_in(s) == {"bnb_cpu_packs_4bit"}
    everything = _markers(s)
    scoped_in = host.scope_to_host(s, {"bnb_cpu_packs_4bit": True})
    scoped_out = host.scope_to_host(s, {"bnb_cpu_packs_4bit": False})
    unprobed = host.scope_to_host(s, {})
    assert _markers(scoped_in) == everything
    assert len(_markers(scoped_out)) < len(everything)
    assert all("absmax" not in r for r in _markers(scoped_out))  # the 4-bit CPU repack bug only
    assert any("bitsandbytes LoRA layers" in r for r in _markers(scoped_out))  # host-independent: kept
    assert _markers(unprobed) == _markers(scoped_out)  # a fact never probed does not hold


def test_the_probe_is_what_bitsandbytes_decides():
    from bitsandbytes.functional import has_avx512bf16

    assert host.probe(["bnb_cpu_packs_4bit"], "cpu") == {"bnb_cpu_packs_4bit": bool(has_avx512bf16())}
    assert host.probe(["bnb_cpu_packs_4bit"], "cuda") == {"bnb_cpu_packs_4bit": False}


def test_an_unknown_host_fact_is_refused_naming_file_and_field(write_scenario):
    marker = {"expectation": "matches_reference", "host": ["bnb_cpu_pack_4bit"], "reason": "r"}
    path = write_scenario(
        scenario_toml("badhost", [{**LOAD_A, "known_failure": marker}], adapters={"a": {"rank": 4}})
    )
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    text = str(err.value)
    assert str(path) in text and "host[0]" in text
    assert "unknown host fact 'bnb_cpu_pack_4bit'" in text and "bnb_cpu_packs_4bit" in text


FAKE = "fake_fact_for_tests"

SCENARIO = scenario_toml(
    "hostscoped",
    [
        LOAD_A,
        {
            "op": "disable_adapters",
            # holds: disable_adapters gives exactly the base output
            "known_failure": {"expectation": "matches_reference", "host": [FAKE], "reason": "planted: held"},
        },
        {
            "op": "enable_adapters",
            # fails: enable_adapters raises nothing
            "expect": {"raises": "ValueError"},
            "known_failure": {
                "expectation": "raises",
                "host": [FAKE],
                "reason": "planted: fails on fake hosts",
            },
        },
    ],
    adapters={"a": {"rank": 4, "seed": 3}},
)


@pytest.mark.parametrize("holds", [True, False])
def test_the_worker_scopes_markers_to_its_host(holds, monkeypatch, write_scenario, cache_root):
    """The negative control: with the fact holding, the planted held marker is an xpass and the planted
    failure an xfail; with it not holding, the same steps are a plain pass and a plain fail. A scoping that
    kept or dropped every marker regardless would fail one of the two."""
    monkeypatch.setitem(host.FACTS, FAKE, host.HostFact(FAKE, "a fact the test chooses", lambda d: holds))
    (case,) = expand(load_scenario(write_scenario(SCENARIO)))
    r = run_case(case, cache_root)
    assert r.host_facts == {FAKE: holds}
    statuses = [s.status for s in r.steps]
    assert statuses == (["pass", "xpass", "xfail"] if holds else ["pass", "pass", "fail"]), r.steps
    assert r.verdict == ("xpass" if holds else "fail")
