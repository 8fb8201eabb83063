"""Facts about the machine a case runs on that decide whether an upstream bug can happen there at all.

A known failure that only a certain CPU or device can trigger names its facts (`host = [...]` in the scenario
file). The worker probes the facts its scenario names, once per case, records them in the result
(`CaseResult.host_facts`), and drops every known failure whose facts do not all hold before any step is
decided. Without that, a marker written on one machine is a wrong verdict on another: the bug that cannot
happen there "xpasses" (strict xfail) and fails the run, or, the other way round, a marker widened to cover
both machines would absorb a real failure where the bug cannot be the cause.

Each fact is probed the way the library itself decides (bitsandbytes asks its own native library), not by
reading /proc/cpuinfo: what matters is the code path the library takes, not the CPU's name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class HostFact:
    name: str
    meaning: str
    probe: Callable[[str], bool]  # the case's device ("cpu", "cuda") -> whether the fact holds


def bnb_cpu_packs_4bit(device: str) -> bool:
    # bitsandbytes' Linear4bit.forward repacks its weights for the CPU only where its native library reports
    # avx512_bf16 (bitsandbytes.nn.modules.Linear4bit: support_avx512bf16_for_cpu); nowhere on CUDA.
    if device != "cpu":
        return False
    try:
        from bitsandbytes.functional import has_avx512bf16
    except Exception:  # not installed or broken: no 4-bit case runs, so no 4-bit bug can happen either
        return False
    return bool(has_avx512bf16())


FACTS: dict[str, HostFact] = {
    f.name: f
    for f in (
        HostFact(
            "bnb_cpu_packs_4bit",
            "bitsandbytes repacks 4-bit weights for the CPU on the first eager forward (a CPU whose "
            "bitsandbytes reports avx512_bf16; never on CUDA)",
            bnb_cpu_packs_4bit,
        ),
    )
}


def fact_holds(name: str, device: str) -> bool:
    return FACTS[name].probe(device)


def probe(names: Iterable[str], device: str) -> dict[str, bool]:
    """Each named fact on this machine, for the case's device."""
    return {name: fact_holds(name, device) for name in sorted(set(names))}


def named_in(scenario) -> set[str]:
    """The host facts the scenario's known failures name (the only ones worth probing)."""
    return {name for kf in _all_known_failures(scenario) for name in kf.host}


def _all_known_failures(scenario):
    for step in scenario.steps:
        yield from step.known_failures
    yield from scenario.expect.known_failures


def scope_to_host(scenario, facts: Mapping[str, bool]):
    """The scenario without the known failures that cannot happen on a host with these facts. A fact missing
    from `facts` counts as not holding: a marker is kept only where every fact it names was seen to hold."""

    def keep(kfs):
        return tuple(kf for kf in kfs if all(facts.get(name, False) for name in kf.host))

    steps = tuple(replace(s, known_failures=keep(s.known_failures)) for s in scenario.steps)
    expect = replace(scenario.expect, known_failures=keep(scenario.expect.known_failures))
    return replace(scenario, steps=steps, expect=expect)
