"""What a serve step is checked against: each kept response against its adapter's fresh reference, the
reference against the math oracle, and the figures. Called by the executor after the stream (untimed)."""

from __future__ import annotations

import dataclasses
import time

from bench.engine.model import Inputs
from bench.engine.serving.check import (
    REFERENCE_ROWS,
    ServingReference,
    adapter_margins,
    agree_with_math,
    check_rule,
    check_run,
    sampled_prompts,
    wanted_references,
)
from bench.engine.serving.figures import figures, request_records
from bench.engine.serving.serve import ServingError, ServingRun, phase
from bench.results.serving_records import ServingRecord


def first_checked_reference(reference, run: ServingRun):
    """The reference logits of the first kept response (cached by check_run: nothing is computed again)."""
    by_id = {r.id: r for r in run.stream}
    first = by_id[min(run.responses)]
    return reference.response(first.adapter, first.prompt, run.prompts).logits


def serving_run_of(op_result, op_error) -> ServingRun | None:
    """The stream as served: the op's result, or what was served before the strategy raised."""
    if isinstance(op_result, ServingRun):
        return op_result
    if isinstance(op_error, ServingError):
        return op_error.partial
    return None


def serving_record(run: ServingRun, oracle, math_oracle, subject) -> ServingRecord:
    """`oracle` (bench.engine.reference.ReferenceOracle) and `math_oracle` give the model, precision and adapter
    files the references are built from; the references themselves are built here, fresh."""
    import torch

    reference = ServingReference(
        fresh_base=oracle.fresh_base,
        workload=subject.workload,
        locations={k: oracle.adapter_locations[k] for k in run.spec.adapters},
        rows=REFERENCE_ROWS,
    )
    phase(f"serve: checking {len(run.responses)} responses against fresh references")
    notes = list(run.notes)
    started = time.perf_counter()
    try:
        # The stream's calls ran on the case's backend once the strategy compiled (its setup compiles).
        backend = subject.compile_setting.backend if subject.compile_setting.enabled else "eager"

        def tol_for(reference_logits):
            return oracle.tolerance(reference_logits, backend)

        prompts = sampled_prompts(run)
        # Every reference this step needs, per adapter in batches, before any is read.
        reference.ensure(wanted_references(run, prompts), run.prompts, forward_of=prompts)
        checks = check_run(run, reference, tol_for)
        checked, loaded_s = time.perf_counter(), reference.load_s
        kind = subject.workload.kind
        # The rule in words from a reference already computed for a check (the bound scales with it).
        rule = check_rule(tol_for(first_checked_reference(reference, run)), kind) if checks else ""

        def math_for(input_ids):
            inputs = Inputs(input_ids, torch.ones_like(input_ids))
            return dataclasses.replace(math_oracle, inputs=inputs, _logits={}, _tokens={}, _adapters={})

        agreement, how = agree_with_math(run, reference, math_for, prompts) if run.served else ({}, "")
        margins = adapter_margins(run, reference, tol_for, prompts) if run.served else {}
    finally:
        reference.close()
    done = time.perf_counter()
    notes.extend(reference.notes)
    if how:
        notes.append(how)
    requests = request_records(run, checks)
    kind = subject.workload.kind
    per_request = subject.workload.new_tokens if kind == "generate" else subject.workload.seq_len
    unavailable = {}
    if not subject.device.startswith("cuda"):
        unavailable["cuda_allocated_after_bytes"] = f"device is {subject.device}: no CUDA allocator"
    if len(run.served) < len(run.stream):
        notes.append(f"{len(run.served)} of {len(run.stream)} requests served before the strategy failed")
    return ServingRecord(
        strategy=run.strategy,
        hotswap_path=subject.hotswap_path if run.strategy == "hotswap" else None,
        adapters=run.spec.adapters,
        arrival=run.spec.arrival,
        figures=figures(requests, run.batches, run.setup_ms or 0.0, per_request) if requests else None,
        requests=requests,
        check_rule=rule,
        oracle_agreement=agreement,
        oracle_prompts=prompts,
        adapter_margins=margins,
        serve_s=run.serve_s,
        check_s=done - started,
        check_load_s=reference.load_s,
        # An adapter loaded again after the responses were checked (none is, normally) counts as loading.
        check_responses_s=checked - started - loaded_s,
        check_oracle_s=done - checked - (reference.load_s - loaded_s),
        reference_calls=reference.calls,
        unavailable=unavailable,
        notes=tuple(notes),
    )
