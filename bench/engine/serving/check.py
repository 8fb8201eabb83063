"""Every checked response of a serve step against a fresh eager reference of its adapter.

The library reference is one freshly loaded model holding every served adapter (`load_adapter` each, then
`set_adapter` per response): eager, never compiled, never swapped. The math oracle (no peft code, W + s*B@A
from the adapter files) checks that reference once per adapter on up to ORACLE_PROMPTS of the served prompts
(one batched call each), so a bug inside `load_adapter`/`set_adapter` that moves both the subject and the
library reference alike is still caught. The references of every two served adapters must differ by more than
DISTINGUISH_FACTOR x the step's tolerance on each of those prompts, or the per-response check could not tell a
server that never switched from a right one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.engine.serving.serve import Response, ServingRun, load_response, model_call
from bench.results.measures import OracleAgreement
from bench.spec.precision import Tolerance
from bench.spec.state import AdapterState, Slot


@dataclass(frozen=True)
class ResponseCheck:
    matches: bool
    max_abs_diff: float | None
    mismatched_tokens: int | None = None


@dataclass
class ServingReference:
    fresh_base: Callable[[], Any]  # the base model loaded afresh (bench.engine.reference.ReferenceOracle)
    workload: Any
    locations: dict[str, str]
    _model: Any = None
    _active: str | None = None
    _cache: dict[tuple[str, int], Response] = field(default_factory=dict)

    def _load(self):
        model = self.fresh_base()
        for key, location in self.locations.items():
            model.load_adapter(location, adapter_name=key)
        model.requires_grad_(False)
        return model

    def response(self, adapter: str, prompt: int, prompts) -> Response:
        key = (adapter, prompt)
        if key not in self._cache:
            if self._model is None:
                self._model = self._load()
            if self._active != adapter:
                self._model.set_adapter(adapter)
                self._active = adapter
            self._cache[key] = self._call(prompts[prompt : prompt + 1])
        return self._cache[key]

    def forward_logits(self, adapter: str, input_ids):
        """Forward logits of one prompt under `adapter` (what the math oracle is compared with)."""
        if self._active != adapter:
            self._model.set_adapter(adapter)
            self._active = adapter
        return self._model(input_ids=input_ids).logits.float().cpu()

    def _call(self, input_ids) -> Response:
        logits, tokens = model_call(self._model, self._model, self.workload, input_ids)
        return Response(logits[0].float().cpu(), None if tokens is None else tokens[0].cpu())

    def close(self) -> None:
        self._model = None
        self._cache.clear()


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
    tol = tol_for(expected.logits)
    diff = (actual.logits - expected.logits).abs()
    # Non-finite on either side is never a match (an infinite reference logit would accept anything).
    finite = bool(torch.isfinite(actual.logits).all()) and bool(torch.isfinite(expected.logits).all())
    within = finite and bool((diff <= tol.atol + tol.rtol * expected.logits.abs()).all())
    return ResponseCheck(within and not mismatched, float(diff.max()), mismatched)


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
# (one batched call per adapter for the math, one reference call per adapter and prompt for the contrast).
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
) -> dict[str, OracleAgreement]:
    """The math oracle against the library reference, once per served adapter, on `prompts` together (one
    batch). `math_oracle_for(input_ids)` builds a MathOracle whose inputs are those prompts."""
    input_ids = run.prompts[list(prompts)]
    math = math_oracle_for(input_ids)
    served = sorted({s.request.adapter for s in run.served})
    out = {}
    if reference._model is None:
        reference._model = reference._load()
    for key in served:
        state = AdapterState(slots=(Slot(key, key, False),), active=(key,))
        out[key] = math.check(state, reference.forward_logits(key, input_ids))
    return out


def margin(a, b, tol_for) -> float:
    """How far apart two references are in units of the response check's own bound, the smaller of the two
    directions (a response of `a` checked against `b`, and of `b` against `a`); 0 when either is not finite."""
    import torch

    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        return 0.0
    diff = (a - b).abs()
    out = []
    for ref in (a, b):
        tol = tol_for(ref)
        out.append(float((diff / (tol.atol + tol.rtol * ref.abs())).max()))
    return min(out)


def adapter_margins(
    run: ServingRun, reference: ServingReference, tol_for, prompts: tuple[int, ...]
) -> dict[str, float]:
    """ "a / b" -> the margin between the fresh references of every two served adapters: the smallest over
    `prompts` (on each prompt a response of one must fail the other's check). Generate: the per-token logits."""
    served = sorted({s.request.adapter for s in run.served})
    refs = {k: [reference.response(k, p, run.prompts).logits for p in prompts] for k in served}
    out = {}
    for i, a in enumerate(served):
        for b in served[i + 1 :]:
            out[f"{a} / {b}"] = min(margin(x, y, tol_for) for x, y in zip(refs[a], refs[b], strict=True))
    return out
