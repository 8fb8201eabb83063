"""Setting a case up in the worker: its sources resolved and checked, the model loaded, the model under test
and both oracles built (bench.worker.execute then runs the steps on them)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.engine.footprint import adapter_file_bytes, model_footprint
from bench.engine.hotswap import PATHS
from bench.engine.math_oracle import MathOracle
from bench.engine.model import load_model, make_inputs, vocab_size_of
from bench.engine.probes.clock import Clock
from bench.engine.reference import ReferenceOracle
from bench.engine.sources.adapters import peft_config, resolve_adapter
from bench.engine.sources.models import resolve_model
from bench.engine.subject import Subject
from bench.spec.cases import Case
from bench.worker.source_check import check_adapter_sources, check_adapters_fit, check_model_files


@dataclass(frozen=True)
class Oracles:
    """The library reference and the math oracle in the case's precision, and the fp32 pair that checks the
    library's logic (docs/verdicts.md, "Two oracles")."""

    reference: ReferenceOracle
    math: MathOracle
    logic_reference: ReferenceOracle
    logic_math: MathOracle


@dataclass
class Ready:
    """What the steps run on: the loaded model under test, both oracles and the adapters' files."""

    subject: Subject
    oracles: Oracles
    adapters: dict
    locations: dict[str, str]
    adapter_bytes: dict[str, int]
    footprint: object
    clock: Clock
    # (batch_size, seq_len) -> (inputs, oracles) of steps on their own shape (bench.worker.shapes)
    shaped: dict = field(default_factory=dict)


def set_up(
    case: Case, cache_root: Path, device: str, work_dir: Path, phases: dict, *, trust: bool, pickle_ok: bool
) -> Ready:
    """Resolve and check the sources, load the model, and build the subject and both oracles."""
    s = case.scenario
    t = time.perf_counter()
    model_src = resolve_model(s.model, cache_root)
    # Before anything loads the model (a generated adapter is built on it): its own code, its weight files.
    check_model_files(
        s.model, model_src.location, model_src.kind, allow_pickle=pickle_ok, trust_remote_code=trust
    )
    adapters = {a.key: a for a in s.adapters}
    resolved = {
        k: resolve_adapter(a, model_src, cache_root, trust_remote_code=trust, allow_pickle=pickle_ok)
        for k, a in adapters.items()
    }
    locations = {k: r.location for k, r in resolved.items()}
    peft_types = check_adapter_sources(s, resolved, allow_pickle=pickle_ok)
    phases["resolve_sources_s"] = time.perf_counter() - t

    t = time.perf_counter()
    model = load_model(
        model_src.location,
        case.precision,
        device,
        quant=s.quantization,
        trust_remote_code=trust,
        allow_pickle=pickle_ok,
    )
    phases["load_model_s"] = time.perf_counter() - t
    check_adapters_fit(s, model, resolved, peft_types)
    inputs = make_inputs(s.workload, vocab_size_of(model), device)
    measured = {k: adapter_file_bytes(loc) for k, loc in locations.items() if resolved[k].kind != "hub"}
    adapter_bytes = {k: n for k, n in measured.items() if n is not None}
    footprint = model_footprint(model, adapter_bytes)

    # What both oracles load: the same base, inputs, adapter files and opt-ins as the model under test.
    same = dict(
        model_location=model_src.location,
        precision=case.precision,
        device=device,
        inputs=inputs,
        workload=s.workload,
        adapter_locations=locations,
        quant=s.quantization,
        trust_remote_code=trust,
        allow_pickle=pickle_ok,
    )
    oracle = ReferenceOracle(
        **same,
        adapter_configs={k: peft_config(a) for k, a in adapters.items() if a.generated},
        pad_rank=padded_rank(case),
    )
    # The second, independent oracle: the same states computed from the adapter files, without peft.
    math_oracle = MathOracle(**same)
    subject = Subject(
        model=model,
        device=device,
        workload=s.workload,
        inputs=inputs,
        compile_setting=case.compile,
        hotswap_path=case.hotswap_path,
        strategy=case.strategy,
        precision=case.precision,
        quant=s.quantization,
        work_dir=work_dir,
        trust_remote_code=trust,
        allow_pickle=pickle_ok,
    )
    clock = Clock.for_device(device)
    subject.clock = clock
    oracles = Oracles(oracle, math_oracle, *_logic_oracles(oracle, math_oracle))
    return Ready(subject, oracles, adapters, locations, adapter_bytes, footprint, clock)


def _logic_oracles(oracle: ReferenceOracle, math_oracle: MathOracle) -> tuple[ReferenceOracle, MathOracle]:
    """The pair that checks the library's logic: a library reference and the math, both in fp32 on unquantized
    weights whatever the case's precision, so a scaling error the library shares with its own reference
    cannot hide inside bf16 rounding (the same objects when the case is fp32 already)."""
    if oracle.precision == "fp32" and oracle.quant is None:
        return oracle, math_oracle
    fp32 = {"precision": "fp32", "quant": None}
    return replace(oracle, **fp32, _logits={}, _tokens={}, _gen_logits={}), replace(
        math_oracle, **fp32, _logits={}, _tokens={}, _gen_logits={}, _adapters={}
    )


def padded_rank(case: Case) -> int | None:
    """The rank the subject's LoRA layers are zero-padded to (peft's prepare_model_for_compiled_hotswap, run by
    the peft path's enable_hotswap): the library reference pads the same way, so that the exact rule compares
    the same computation (zero columns change the summation order, by a few ulps, not the value). The
    transformers path stores its target_rank and never pads: no padding there."""
    if not PATHS[case.hotswap_path].pads_to_target_rank:
        return None
    steps = case.scenario.steps
    return next(
        (st.target_rank for st in steps if st.target_rank is not None and st.expect.raises is None), None
    )
