"""Every checked response of a serve step against a fresh eager reference of its adapter.

The library reference is one freshly loaded base model that holds one served adapter at a time (`load_adapter`
it, the previous one removed with `delete_adapter`): eager, never compiled, never swapped. Its references are
computed per adapter, that adapter's prompts together (ServingReference.ensure: one forward call per adapter
for the shipped pools, checked bit for bit against a one-prompt call), so checking every response costs one
load and one call per adapter, not one per response. The math oracle (no peft code, W + s*B@A from the adapter
files) checks that reference once per adapter on up to ORACLE_PROMPTS of the served prompts (fp32 LoRA: every
adapter alone on its own rows of one call to an unchanged base, oracle_rows.each_alone; otherwise the adapters
merged in turn into one base model loaded once, each undone exactly before the next: MathOracle.one_base), so
a bug inside `load_adapter`/`delete_adapter` that moves both the subject and the
library reference alike is still caught. The references of every two served adapters must differ by more than
DISTINGUISH_FACTOR x the step's tolerance on each of those prompts, or the per-response check could not tell a
server that never switched from a right one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.engine import oracle_rows
from bench.engine.math_oracle import compare_oracles
from bench.engine.serving.serve import Response, ServingRun, load_response, model_call
from bench.results.measures import OracleAgreement
from bench.spec.precision import Tolerance
from bench.spec.state import AdapterState, Slot


@dataclass(frozen=True)
class ResponseCheck:
    matches: bool
    max_abs_diff: float | None
    mismatched_tokens: int | None = None


# Forward references are computed this many prompts per model call (one call per adapter for a pool of up to
# this many prompts). Every prompt of a stream has the workload's seq_len, so a batch is never padded; and
# the first batched call is checked against a one-prompt call (ServingReference.exact_batches), bit for bit.
REFERENCE_ROWS = 16


@dataclass
class ServingReference:
    """One fresh base model for the step, holding one served adapter at a time. The references are computed per
    adapter, its prompts together (`ensure`): a forward workload REFERENCE_ROWS prompts per call; generate one
    prompt per call, because its decode steps run one token per row, and a matmul over one row is not the same
    kernel as over several (measured on CPU: batched generate logits 7.7e-7 off the one-prompt ones, the fp32
    exact rule's bound is 9.5e-7).

    Why one base model for every adapter, each loaded after the previous one is deleted, is still a fresh and
    independent reference:
    - it is not the subject: `fresh_base` loads the base afresh from its files (a new object the strategy under
      test never sees: no hotswap, compile, merge, unload or reload touches it), and each adapter is loaded
      from its files with plain `load_adapter`;
    - it holds one adapter at a time, so its logits are those of the base with that adapter alone. They equal a
      fresh model loaded with that adapter alone bit for bit, in any order of loads, and for an adapter loaded
      again after others (tests/engine/test_oracle_base.py, against ReferenceOracle's one model per state);
    - a `delete_adapter` that left something of the previous adapter behind would not pass unseen: every served
      adapter's reference is checked against the math oracle, which uses no peft (agree_with_math), and every
      two adapters' references must be told apart (adapter_margins).

    One adapter at a time, not every adapter side by side switched by `set_adapter` (what this class did
    before): peft walks the whole module tree for each adapter it injects, and each adapter already loaded
    makes that tree larger, so loading eight adapters side by side took 9.4 s on the 135M shape against 7.8 s
    one at a time, the deletes included (check_load_s, reports/performance/serving_check.md)."""

    fresh_base: Callable[[], Any]  # the base model loaded afresh (bench.engine.reference.ReferenceOracle)
    workload: Any
    locations: dict[str, str]
    rows: int = REFERENCE_ROWS  # prompts per forward call; 1: the unbatched reference
    calls: int = 0  # model calls made for the references
    loads: int = 0  # load_adapter calls (one per served adapter when its references are asked for together)
    load_s: float = 0.0  # loading the fresh base and each adapter (and deleting the one before)
    # Whether a batched call's last row equals the same prompt called alone, bit for bit (None: no batch
    # made); where it does not, every reference is computed one prompt per call.
    exact_batches: bool | None = None
    notes: list[str] = field(default_factory=list)
    _model: Any = None
    _active: str | None = None  # the one adapter the model holds
    _cache: dict[tuple[str, int], Response] = field(default_factory=dict)
    # (adapter, prompt ids) -> forward logits of those prompts in one call (generate: for the math oracle)
    _forward: dict[tuple[str, tuple[int, ...]], Any] = field(default_factory=dict)

    def _activate(self, adapter: str) -> None:
        """Make `adapter` the one the model holds: the base is loaded on first use; the adapter held before is
        deleted, then this one is loaded from its files and set active."""
        import time

        if self._active == adapter:
            return
        t = time.perf_counter()
        if self._model is None:
            self._model = self.fresh_base()
        if self._active is not None:
            self._model.delete_adapter(self._active)
            self._active = None
        self._model.load_adapter(self.locations[adapter], adapter_name=adapter)
        self._model.set_adapter(adapter)
        self._model.requires_grad_(False)
        self._active = adapter
        self.loads += 1
        self.load_s += time.perf_counter() - t

    def ensure(self, wanted: dict[str, set[int]], prompts, forward_of: tuple[int, ...] = ()) -> None:
        """Compute the reference of every (adapter, prompt) in `wanted` that is not cached yet: per adapter,
        its prompts in ascending order, `rows` per call (forward) or one per call (generate). `forward_of`: the
        prompts whose forward logits (one call) a generate workload also needs per adapter (library_logits),
        computed while that adapter is loaded."""
        for adapter in sorted(wanted):
            todo = sorted(p for p in wanted[adapter] if (adapter, p) not in self._cache)
            while todo:
                self._activate(adapter)
                step = self.rows if self.workload.kind == "forward" else 1
                chunk, todo = todo[:step], todo[step:]
                out = self._call(prompts[chunk])
                if (
                    len(chunk) > 1
                    and self.exact_batches is None
                    and not self._batch_is_exact(out, chunk, prompts)
                ):
                    out = [self._call(prompts[[p]])[0] for p in chunk]
                for p, response in zip(chunk, out, strict=True):
                    self._cache[(adapter, p)] = response
            if forward_of and self.workload.kind != "forward":
                self._forward_logits(adapter, tuple(forward_of), prompts)

    def _batch_is_exact(self, out: list[Response], chunk: list[int], prompts) -> bool:
        """The batch's last row against its prompt called alone; where they differ, batching is switched off
        for the rest of the step and said in a note."""
        import torch

        (alone,) = self._call(prompts[chunk[-1:]])
        batched = out[-1]
        self.exact_batches = torch.equal(batched.logits, alone.logits) and (
            alone.tokens is None or torch.equal(batched.tokens, alone.tokens)
        )
        if not self.exact_batches:
            self.rows = 1
            diff = float((batched.logits - alone.logits).abs().max())
            self.notes.append(
                f"batched references differ from one-prompt calls here (max abs diff {diff:.3g}): every reference "
                "computed one prompt per call"
            )
        return self.exact_batches

    def response(self, adapter: str, prompt: int, prompts) -> Response:
        key = (adapter, prompt)
        if key not in self._cache:
            self.ensure({adapter: {prompt}}, prompts)
        return self._cache[key]

    def library_logits(self, adapter: str, prompt_ids: tuple[int, ...], prompts):
        """Forward logits [len(prompt_ids), seq_len, vocab] of those prompts under `adapter` (what the math
        oracle is compared with): the cached references for a forward workload, one batched forward for
        generate (whose references hold the generated tokens' logits; made by `ensure` given `forward_of`)."""
        import torch

        if self.workload.kind == "forward":
            return torch.stack([self.response(adapter, p, prompts).logits for p in prompt_ids])
        return self._forward_logits(adapter, tuple(prompt_ids), prompts)

    def _forward_logits(self, adapter: str, prompt_ids: tuple[int, ...], prompts):
        key = (adapter, prompt_ids)
        if key not in self._forward:
            self._forward[key] = self.forward_logits(adapter, prompts[list(prompt_ids)])
        return self._forward[key]

    def forward_logits(self, adapter: str, input_ids):
        """Forward logits of `input_ids` under `adapter`."""
        import torch

        self._activate(adapter)
        self.calls += 1
        with torch.no_grad():
            return self._model(input_ids=input_ids).logits.float().cpu()

    def _call(self, input_ids) -> list[Response]:
        import torch

        self.calls += 1
        # No autograd graph, wherever it is called from (run_case turns gradients off for the whole case).
        with torch.no_grad():
            logits, tokens = model_call(self._model, self._model, self.workload, input_ids)
        return [
            Response(logits[i].float().cpu(), None if tokens is None else tokens[i].cpu())
            for i in range(input_ids.shape[0])
        ]

    def close(self) -> None:
        self._model = None
        self._active = None
        self._cache.clear()
        self._forward.clear()


def wanted_references(run: ServingRun, prompts: tuple[int, ...]) -> dict[str, set[int]]:
    """adapter -> the prompts a reference is needed on: every kept response's, and `prompts` (the math
    oracle's and the distinguishability check's) for every served adapter."""
    by_id = {r.id: r for r in run.stream}
    out: dict[str, set[int]] = {}
    for rid in run.responses:
        out.setdefault(by_id[rid].adapter, set()).add(by_id[rid].prompt)
    for s in run.served:
        out.setdefault(s.request.adapter, set()).update(prompts)
    return out


def compare(actual: Response, expected: Response, tol_for) -> ResponseCheck:
    """Tokens exactly (generate), logits element-wise within atol + rtol * |reference| (both workloads)."""
    import torch

    mismatched = None
    if expected.tokens is not None:
        if actual.tokens is None or actual.tokens.shape != expected.tokens.shape:
            return ResponseCheck(False, None, int(expected.tokens.numel()))
        mismatched = int((actual.tokens != expected.tokens).sum())
    if actual.logits.shape != expected.logits.shape:
        return ResponseCheck(False, None, mismatched)
    diff = (actual.logits - expected.logits).abs()
    largest = diff.max()
    # Non-finite on either side is never a match (an infinite reference logit would accept anything): _bound
    # is None for a non-finite reference.
    bound = _bound(expected.logits, tol_for)
    if bound is None or not bool(torch.isfinite(actual.logits).all()):
        within = False
    elif isinstance(bound, float):  # atol alone: the same comparison as element by element, one pass fewer
        within = bool(largest <= bound)
    else:
        within = bool((diff <= bound).all())
    return ResponseCheck(within and not mismatched, float(largest), mismatched)


def check_rule(tol: Tolerance, kind: str) -> str:
    """The rule in words, from the tolerance of one response (the bound scales with each reference)."""
    rule = (
        f"{tol.rule}: |response - reference| <= atol + {tol.rtol:g} * |reference| on every logit, atol "
        f"{tol.atol:.3g} here ({tol.reason})"
    )
    return rule + (", and the greedy tokens equal" if kind == "generate" else "")


def check_run(run: ServingRun, reference: ServingReference, tol_for) -> dict[int, ResponseCheck]:
    """Each kept response against its adapter's reference on the same prompt; `tol_for(reference_logits)`
    gives the bound (bench.spec.precision.tolerance_for: the precision and the backend the stream ran on)."""
    by_id = {r.id: r for r in run.stream}
    out = {}
    for rid, path in sorted(run.responses.items()):
        req = by_id[rid]
        out[rid] = compare(
            load_response(path), reference.response(req.adapter, req.prompt, run.prompts), tol_for
        )
    return out


# How many distinct prompts the math oracle and the distinguishability check use per adapter: a bounded cost
# (one math oracle per adapter on these prompts together; their references join each adapter's batch).
ORACLE_PROMPTS = 3


def sampled_prompts(run: ServingRun, k: int = ORACLE_PROMPTS) -> tuple[int, ...]:
    """The first k distinct prompts the served requests used, in the order they were first served."""
    out: list[int] = []
    for s in run.served:
        if s.request.prompt not in out:
            out.append(s.request.prompt)
            if len(out) == k:
                break
    return tuple(out)


def agree_with_math(
    run: ServingRun, reference: ServingReference, math_oracle_for, prompts: tuple[int, ...]
) -> tuple[dict[str, OracleAgreement], str]:
    """The math oracle against the library reference, once per served adapter, on `prompts` together, and how
    the oracle computed them. `math_oracle_for(input_ids)` builds a MathOracle whose inputs are those prompts.
    fp32 LoRA: every adapter alone on its own rows of one batch of a plain base, through forward hooks
    (oracle_rows.each_alone). Otherwise its adapters are merged into one base model loaded once and undone
    exactly after each (MathOracle.one_base: bit for bit a fresh model per adapter)."""
    math = math_oracle_for(run.prompts[list(prompts)])
    served = sorted({s.request.adapter for s in run.served})
    library = {key: reference.library_logits(key, prompts, run.prompts) for key in served}
    rows, why = oracle_rows.each_alone(math, served)
    if rows is not None:
        how = (
            "math oracle: each adapter alone on its own rows of one batch, s * (x @ A.T) @ B.T added by hooks"
        )
        return {key: compare_oracles(library[key], rows[key], math.precision) for key in served}, how
    out = {}
    with math.one_base():
        for key in served:
            state = AdapterState(slots=(Slot(key, key, False),), active=(key,))
            out[key] = math.check(state, library[key])
    return out, f"math oracle: each adapter merged into the base in turn ({why})"


def margin(a, b, tol_for) -> float:
    """How far apart two references are in units of the response check's own bound, the smaller of the two
    directions (a response of `a` checked against `b`, and of `b` against `a`); 0 when either is not finite."""
    return _margin(a, b, _bound(a, tol_for), _bound(b, tol_for))


def _bound(ref, tol_for):
    """The response check's bound around `ref` (`compare`, and the margins in its units): atol + rtol * |ref|
    element by element (atol alone, a float, where rtol is 0, as the exact rule's is), or None where `ref` is
    not finite."""
    import torch

    if not bool(torch.isfinite(ref).all()):
        return None
    tol = tol_for(ref)
    return tol.atol if tol.rtol == 0 and tol.atol > 0 else tol.atol + tol.rtol * ref.abs()


def _margin(a, b, bound_a, bound_b) -> float:
    if bound_a is None or bound_b is None:
        return 0.0
    diff = (a - b).abs()
    # max(diff / atol) is diff.max() / atol: division by a positive number keeps the order, in the same dtype.
    return min(
        float(diff.max() / bound) if isinstance(bound, float) else float((diff / bound).max())
        for bound in (bound_a, bound_b)
    )


def adapter_margins(
    run: ServingRun, reference: ServingReference, tol_for, prompts: tuple[int, ...]
) -> dict[str, float]:
    """ "a / b" -> the margin between the fresh references of every two served adapters: the smallest over
    `prompts` (on each prompt a response of one must fail the other's check). Generate: the per-token logits.
    Each reference's bound is worked out once, not once per pair it is in."""
    served = sorted({s.request.adapter for s in run.served})
    refs = {k: [reference.response(k, p, run.prompts).logits for p in prompts] for k in served}
    bounds = {k: [_bound(x, tol_for) for x in refs[k]] for k in served}
    out = {}
    for i, a in enumerate(served):
        for b in served[i + 1 :]:
            out[f"{a} / {b}"] = min(
                _margin(x, y, bx, by)
                for x, y, bx, by in zip(refs[a], refs[b], bounds[a], bounds[b], strict=True)
            )
    return out
