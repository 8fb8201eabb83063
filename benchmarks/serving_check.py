"""What checking a serve step costs beside serving it, in ONE process on ONE served stream, for variants of the
check: `unbatched` (one reference call per (adapter, prompt) pair, one more forward per adapter for the math
oracle's library logits, and a fresh math oracle model per adapter: the check at 19fd455), `before` (batched
references, bench/engine/serving/check.py ServingReference.ensure, and a fresh math oracle model per adapter,
merged out of place: the check at a433a00), `fresh_math` (the same with today's in-place merge),
`every_adapter` (the math oracle on one base, MathOracle.one_base, and the library reference one model holding
every served adapter side by side, switched by set_adapter, and each merge's delta in a new buffer: the check at
e57ac2e), `one_base` (the same math oracle with the deltas in buffers reused per shape, and the library
reference one base holding one adapter at a time, each loaded after the previous one is deleted: the check
at d629b20) and `rows` (the math oracle with every adapter alone on its own rows of one batch, through forward
hooks on an unchanged base, bench/engine/oracle_rows.py; and each reference's bound worked out once for the
distinguishability margins: the check now). The merges give the same bits every way
(tests/engine/test_oracle_base.py), and so do the two library references; the rows form is within the fp32
oracle bound of them (tests/engine/test_oracle_rows.py).

One case's stream is served once; then the `--variants` checks of that same stream alternate, `--rounds` times each
(interleaved, so that the machine's load drifts over both alike). Each check is timed by wall clock and by the
process's CPU time (what a shared machine distorts least), with its parts (ServingRecord.check_load_s,
check_responses_s, check_oracle_s), its reference calls and its count of wrong responses, which must be the
same for both.

    OMP_NUM_THREADS=1 python benchmarks/serving_check.py examples/cpu/serving_135m.toml -k side_by_side \
        --rounds 3 --variants one_base,rows --out reports/performance/serving_check_rows.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.engine.math_oracle import _merge_deltas as _MERGE  # noqa: E402  (after the path)


@contextlib.contextmanager
def fresh_math():
    """A fresh math oracle model per adapter (from_pretrained and merge each), as before MathOracle.one_base
    (with the library reference of that time, every_adapter)."""
    from bench.engine.math_oracle import MathOracle

    one_base = MathOracle.one_base
    MathOracle.one_base = lambda self: contextlib.nullcontext()
    try:
        with every_adapter():  # the library reference of that time
            yield
    finally:
        MathOracle.one_base = one_base


@contextlib.contextmanager
def unbatched():
    """The check before batching: one prompt per reference call, and the math oracle's library logits from a
    forward of their own (ServingReference.forward_logits), as bench/engine/serving/check.py did."""
    import bench.engine.serving.evidence as evidence
    from bench.engine.serving.check import ServingReference

    rows, library = evidence.REFERENCE_ROWS, ServingReference.library_logits
    evidence.REFERENCE_ROWS = 1
    ServingReference.library_logits = lambda self, adapter, ids, prompts: self.forward_logits(
        adapter, prompts[list(ids)]
    )
    try:
        with before():
            yield
    finally:
        evidence.REFERENCE_ROWS, ServingReference.library_logits = rows, library


def _merge_out_of_place(modules, adapters, edits):
    """bench.engine.math_oracle._merge_deltas's LoRA merge as at a433a00: W.float() + scaling * (B @ A), built in
    new buffers and copied back (IA3 as today)."""
    from bench.engine.lora_files import is_conv1d
    from bench.engine.math_oracle import is_quantized

    for adapter in adapters:
        _MERGE(modules, [dataclasses.replace(adapter, lora=())], edits)
        for lora in adapter.lora:
            module = modules[lora.module]
            if is_quantized(module):
                continue
            weight = edits.keep(module.weight)
            delta = lora.scaling * (lora.B @ lora.A)
            delta = delta.T if is_conv1d(module) or adapter.fan_in_fan_out else delta
            weight.copy_((weight.float() + delta).to(weight.dtype))


@contextlib.contextmanager
def before():
    """The check at a433a00: batched references, a fresh math oracle model per adapter, merged out of place."""
    import bench.engine.math_oracle as math_oracle

    math_oracle._merge_deltas = _merge_out_of_place
    try:
        with fresh_math():
            yield
    finally:
        math_oracle._merge_deltas = _MERGE


@contextlib.contextmanager
def every_adapter():
    """The check at e57ac2e: the library reference one fresh model holding every served adapter side by side
    (each `load_adapter`ed at its first use of the model), switched by `set_adapter`; and the math oracle's
    deltas each in a new buffer (no scratch)."""
    import bench.engine.math_oracle as math_oracle
    from bench.engine.serving.check import ServingReference

    one_at_a_time, delta = ServingReference._activate, math_oracle.lora_delta

    def activate(self, adapter):
        if self._active == adapter:
            return
        t = time.perf_counter()
        if self._model is None:
            self._model = self.fresh_base()
            for key, location in self.locations.items():
                self._model.load_adapter(location, adapter_name=key)
                self.loads += 1
            self._model.requires_grad_(False)
            self.load_s += time.perf_counter() - t  # as then: the switches count as the responses' time
        self._model.set_adapter(adapter)
        self._active = adapter

    ServingReference._activate = activate
    math_oracle.lora_delta = lambda weight, lora, *, transposed, scratch=None: delta(
        weight, lora, transposed=transposed
    )
    try:
        with one_base():  # the math oracle, margins and comparison of that time
            yield
    finally:
        ServingReference._activate, math_oracle.lora_delta = one_at_a_time, delta


def _margins_per_pair(run, reference, tol_for, prompts):
    """adapter_margins as at d629b20: both bounds worked out again for every pair."""
    from bench.engine.serving.check import margin

    served = sorted({s.request.adapter for s in run.served})
    refs = {k: [reference.response(k, p, run.prompts).logits for p in prompts] for k in served}
    return {
        f"{a} / {b}": min(margin(x, y, tol_for) for x, y in zip(refs[a], refs[b], strict=True))
        for i, a in enumerate(served)
        for b in served[i + 1 :]
    }


def _compare_every_element(actual, expected, tol_for):
    """check.compare as at d629b20: atol + rtol * |reference| element by element, also where rtol is 0."""
    import torch

    from bench.engine.serving.check import ResponseCheck

    mismatched = None
    if expected.tokens is not None:
        if actual.tokens is None or actual.tokens.shape != expected.tokens.shape:
            return ResponseCheck(False, None, int(expected.tokens.numel()))
        mismatched = int((actual.tokens != expected.tokens).sum())
    if actual.logits.shape != expected.logits.shape:
        return ResponseCheck(False, None, mismatched)
    tol = tol_for(expected.logits)
    diff = (actual.logits - expected.logits).abs()
    finite = bool(torch.isfinite(actual.logits).all()) and bool(torch.isfinite(expected.logits).all())
    within = finite and bool((diff <= tol.atol + tol.rtol * expected.logits.abs()).all())
    return ResponseCheck(within and not mismatched, float(diff.max()), mismatched)


@contextlib.contextmanager
def one_base():
    """The check at d629b20: the math oracle merges each adapter into one base in turn (MathOracle.one_base;
    oracle_rows refused), the margins work out both bounds per pair, and every response is compared element by
    element."""
    import bench.engine.oracle_rows as oracle_rows
    import bench.engine.serving.check as check
    import bench.engine.serving.evidence as evidence

    saved = oracle_rows.each_alone, evidence.adapter_margins, check.compare
    oracle_rows.each_alone = lambda math, keys: (None, "the check at d629b20")
    evidence.adapter_margins, check.compare = _margins_per_pair, _compare_every_element
    try:
        yield
    finally:
        oracle_rows.each_alone, evidence.adapter_margins, check.compare = saved


@contextlib.contextmanager
def collector_on():
    """The check at 91069fa: the cyclic garbage collector left on while the references are built (each
    load_adapter's new objects set off passes over the whole process). The worker now pauses it around every
    step's references (bench.worker.evidence.gather_evidence), and timed_check takes the same pause from there."""
    import bench.worker.evidence as worker_evidence

    paused = worker_evidence.collector_paused
    worker_evidence.collector_paused = contextlib.nullcontext
    try:
        yield
    finally:
        worker_evidence.collector_paused = paused


VARIANTS = {
    "collector_on": collector_on,
    "every_adapter": every_adapter,
    "unbatched": unbatched,
    "before": before,
    "fresh_math": fresh_math,
    "one_base": one_base,
    "rows": contextlib.nullcontext,
}


def timed_check(run, ready, variant) -> dict:
    import bench.worker.evidence as worker_evidence
    from bench.engine.serving.evidence import serving_record

    # The pause the worker puts around a step's references (looked up now: collector_on takes it out).
    with variant(), worker_evidence.collector_paused():
        cpu, wall = time.process_time(), time.perf_counter()
        sv = serving_record(run, ready.oracles.reference, ready.oracles.math, ready.subject)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "check_s": sv.check_s,
        "check_cpu_s": cpu,
        "check_load_s": sv.check_load_s,
        "check_responses_s": sv.check_responses_s,
        "check_oracle_s": sv.check_oracle_s,
        "reference_calls": sv.reference_calls,
        "wrong_responses": sv.figures.wrong_responses,
        "checked_responses": sv.figures.checked_responses,
        "wrong_ids": [q.id for q in sv.requests if q.matches is False],
        "loadavg": os.getloadavg(),
    }


def _time_setups() -> list[float]:
    """The CPU seconds of each strategy setup from now on (the serve op times its setup by wall clock only)."""
    from bench.engine.serving.strategies import STRATEGIES

    spent: list[float] = []
    for strategy in STRATEGIES.values():

        def setup(ctx, real=strategy.setup):
            cpu = time.process_time()
            try:
                return real(ctx)
            finally:
                spent.append(time.process_time() - cpu)

        strategy.setup = setup
    return spent


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: at least 1")
    return value


def _resized(step, args):
    """The serve step with --requests / --prompts in place of the scenario's (the check's fixed cost is per
    adapter, its per-response cost per distinct (adapter, prompt): how the ratio moves with the stream)."""
    serve = step.serve
    if args.requests is not None:
        serve = dataclasses.replace(serve, requests=args.requests)
    if args.prompts is not None:
        serve = dataclasses.replace(serve, prompts=args.prompts)
    return dataclasses.replace(step, serve=serve)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario")
    ap.add_argument("-k", default="side_by_side", help="the case whose stream is served (text of its id)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default="one_base,rows", help=f"comma-separated, of {sorted(VARIANTS)}")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "peft-bench")
    ap.add_argument("--requests", type=_positive, help="serve this many requests instead of the scenario's")
    ap.add_argument("--prompts", type=_positive, help="draw them from this many distinct prompts instead")
    args = ap.parse_args(argv)

    import torch

    from bench.ops import OPS
    from bench.scenario import load_scenario
    from bench.spec.cases import expand
    from bench.worker.prepare import set_up

    torch.set_grad_enabled(False)
    (case,) = [c for c in expand(load_scenario(args.scenario)) if args.k in c.id][:1]
    with tempfile.TemporaryDirectory(prefix="serving-check-") as work:
        ready = set_up(case, args.cache, "cpu", Path(work), {}, trust=False, pickle_ok=False)
        setup_cpu_s = _time_setups()
        cpu = time.process_time()
        run = OPS["serve"].apply(
            ready.subject, _resized(case.scenario.steps[0], args), ready.adapters, ready.locations
        )
        serve_and_setup_cpu_s = time.process_time() - cpu
        serve_cpu_s = serve_and_setup_cpu_s - sum(
            setup_cpu_s
        )  # the stream's CPU, what check_cpu_s is set against
        variants = {name: VARIANTS[name] for name in args.variants.split(",")}
        rounds: dict[str, list[dict]] = {name: [] for name in variants}
        for i in range(args.rounds):
            for name, variant in variants.items():
                rounds[name].append(timed_check(run, ready, variant))
                r = rounds[name][-1]
                print(
                    f"round {i + 1} {name}: check {r['check_s']:.1f} s (cpu {r['check_cpu_s']:.1f} s; load "
                    f"{r['check_load_s']:.1f}, responses {r['check_responses_s']:.1f}, oracle "
                    f"{r['check_oracle_s']:.1f}), {r['reference_calls']} calls, wrong {r['wrong_responses']}",
                    flush=True,
                )
    out = {
        "case": case.id,
        "command": " ".join(sys.argv),
        "serve_s": run.serve_s,
        "setup_s": (run.setup_ms or 0) / 1000,
        "serve_and_setup_cpu_s": serve_and_setup_cpu_s,
        "serve_cpu_s": serve_cpu_s,
        "requests": len(run.served),
        "prompts": len(run.prompts),
        "adapters": len({s.request.adapter for s in run.served}),
        "rounds": rounds,
        "median": {
            name: {
                k: statistics.median(r[k] for r in rs)
                for k in ("check_s", "check_cpu_s", "check_load_s", "check_responses_s", "check_oracle_s")
            }
            for name, rs in rounds.items()
        },
        "cpu": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    for name, med in out["median"].items():
        print(
            f"{name}: median check {med['check_s']:.1f} s / serve {run.serve_s:.1f} s = "
            f"{med['check_s'] / run.serve_s:.2f}; / serve + setup {med['check_s'] / (run.serve_s + out['setup_s']):.2f}; "
            f"responses part {med['check_responses_s'] / run.serve_s:.2f}; "
            f"CPU: check {med['check_cpu_s']:.1f} s / serve {serve_cpu_s:.1f} s = {med['check_cpu_s'] / serve_cpu_s:.2f}"
        )
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
