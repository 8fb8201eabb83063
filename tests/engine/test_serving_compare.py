"""bench.engine.serving.check.compare, the per-response check: the same verdict as the element-by-element rule
|actual - reference| <= atol + rtol * |reference| (what the check did before its rtol-0 shortcut, kept in
benchmarks/serving_check.py) at the bound's edge on either side, and never a match where either side is not
finite or the greedy tokens differ."""

from __future__ import annotations

import pytest
import torch

from bench.engine.serving.check import compare
from bench.engine.serving.serve import Response
from bench.spec.precision import Tolerance
from benchmarks.serving_check import _compare_every_element


def _tol(atol: float, rtol: float):
    return lambda ref: Tolerance(atol, rtol, "test")


def _edge(ref: torch.Tensor, atol: float, rtol: float, *, inside: bool) -> torch.Tensor:
    """ref moved by its bound, then one float step in or out of it, on every element."""
    bound = atol + rtol * ref.abs()
    moved = ref + bound
    toward = ref if inside else torch.full_like(ref, float("inf"))
    while True:  # a float step at a time until on the wanted side (rounding of ref + bound may land either)
        ok = ((moved - ref).abs() <= bound).all() if inside else ((moved - ref).abs() > bound).any()
        if ok:
            return moved
        moved = torch.nextafter(moved, toward)


@pytest.mark.parametrize("atol, rtol", [(1e-5, 0.0), (0.0, 0.0), (1e-5, 1e-3), (0.0, 1e-2)])
@pytest.mark.parametrize("inside", [True, False])
def test_compare_gives_the_element_by_element_verdict_at_the_bounds_edge(atol, rtol, inside):
    gen = torch.Generator().manual_seed(int(atol * 1e6) + int(rtol * 1e4) + inside)
    ref = torch.randn(16, 50, generator=gen)
    actual = _edge(ref, atol, rtol, inside=inside)
    got = compare(Response(actual), Response(ref), _tol(atol, rtol))
    want = _compare_every_element(Response(actual), Response(ref), _tol(atol, rtol))
    assert got == want
    assert got.matches is inside


@pytest.mark.parametrize("where", ["reference", "actual"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("rtol", [0.0, 1e-3])
def test_a_non_finite_logit_on_either_side_never_matches(where, value, rtol):
    ref = torch.zeros(4, 8)
    actual = ref.clone()
    (ref if where == "reference" else actual)[1, 2] = value
    assert not compare(Response(actual), Response(ref), _tol(1e9, rtol)).matches
    # control: the same tensors, finite, match under that tolerance
    assert compare(Response(torch.zeros(4, 8)), Response(torch.zeros(4, 8)), _tol(1e9, rtol)).matches


def test_tokens_must_be_equal_and_shapes_must_agree():
    ref = Response(torch.zeros(3, 8), torch.tensor([1, 2, 3]))
    assert compare(Response(torch.zeros(3, 8), torch.tensor([1, 2, 3])), ref, _tol(0.0, 0.0)).matches
    wrong = compare(Response(torch.zeros(3, 8), torch.tensor([1, 9, 3])), ref, _tol(0.0, 0.0))
    assert not wrong.matches and wrong.mismatched_tokens == 1
    assert not compare(Response(torch.zeros(2, 8), torch.tensor([1, 2, 3])), ref, _tol(1.0, 0.0)).matches
    assert not compare(
        Response(torch.zeros(3, 8)), ref, _tol(1.0, 0.0)
    ).matches  # no tokens where some were due


@pytest.mark.parametrize("rtol", [0.0, 1e-3])
def test_a_difference_of_exactly_the_bound_matches_and_one_step_more_does_not(rtol):
    """On a zero reference the bound is atol exactly: a logit that far off is within it (<=), the next float
    up is not, by the element-by-element rule and by compare alike."""
    atol = 1e-5
    ref = torch.zeros(4, 8)
    at = torch.full_like(ref, atol)
    past = torch.nextafter(at, torch.full_like(ref, float("inf")))
    for actual, matches in ((at, True), (past, False)):
        got = compare(Response(actual), Response(ref), _tol(atol, rtol))
        assert got == _compare_every_element(Response(actual), Response(ref), _tol(atol, rtol))
        assert got.matches is matches
