"""The binary search, with skip: a pure function of an ordered list of versions and a probe callable.

The first version is claimed good and the last bad; both are probed, because a claim is not evidence. A
version the probe cannot test (it does not install, import or reach the expectation) is skipped the way
`git bisect skip` does: the search probes the untested version nearest the middle instead, and when only
skipped versions separate the last good from the first bad, the answer says the break lies in that span.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

GOOD, BAD, UNTESTABLE = "good", "bad", "untestable"
STATES = (GOOD, BAD, UNTESTABLE)


@dataclass(frozen=True)
class Probe:
    version: str
    state: str  # good | bad | untestable
    reason: str  # why: the case, the expectation and its message, or why it could not be tested
    order: int  # 1 for the first probe run


@dataclass(frozen=True)
class Answer:
    """What the search found. `kind` says which of the outcomes it is:

    found:        first_bad is the first bad version, last_good the one before it that held
    ambiguous:    the break is in `skipped_between` or first_bad: untestable versions hide which
    good_is_bad:  the claimed good end does not hold (bad or untestable): nothing to bisect
    no_bad:       no testable version at or below the claimed bad end is bad
    """

    kind: str
    last_good: str | None
    first_bad: str | None
    skipped_between: tuple[str, ...]
    probes: tuple[Probe, ...]  # in the order they ran


def bisect(versions: Sequence[str], probe: Callable[[str], tuple[str, str]]) -> Answer:
    """`probe(version) -> (state, reason)`; versions oldest first, versions[0] claimed good, [-1] bad."""
    if len(versions) < 2:
        raise ValueError(f"bisect needs at least a good and a bad version, got {list(versions)}")
    if len(set(versions)) != len(versions):
        raise ValueError(f"versions repeat: {list(versions)}")
    done: dict[int, Probe] = {}

    def run(i: int) -> str:
        if i not in done:
            state, reason = probe(versions[i])
            if state not in STATES:
                raise ValueError(f"probe({versions[i]!r}) returned {state!r}, not one of {STATES}")
            done[i] = Probe(versions[i], state, reason, len(done) + 1)
        return done[i].state

    def answer(kind: str, lo: int | None, hi: int | None) -> Answer:
        between = ()
        if lo is not None and hi is not None:
            between = tuple(
                versions[i] for i in range(lo + 1, hi) if done.get(i) and done[i].state == UNTESTABLE
            )
        return Answer(
            kind,
            versions[lo] if lo is not None else None,
            versions[hi] if hi is not None else None,
            between,
            tuple(sorted(done.values(), key=lambda p: p.order)),
        )

    lo, hi = 0, len(versions) - 1
    if run(lo) != GOOD:
        return answer("good_is_bad", None, None)
    # An untestable bad end: walk down to the nearest testable version, which is the real bad end or,
    # if it holds, shows that nothing testable in the range is bad.
    while run(hi) == UNTESTABLE:
        hi -= 1
        if hi == lo:
            return answer("no_bad", lo, None)
    if done[hi].state == GOOD:
        return answer("no_bad", hi, None)
    while True:
        untried = [i for i in range(lo + 1, hi) if i not in done]
        if not untried:
            break
        middle = (lo + hi) / 2
        i = min(untried, key=lambda j: (abs(j - middle), j))
        state = run(i)
        if state == GOOD:
            lo = i
        elif state == BAD:
            hi = i
    kind = "ambiguous" if any(done[i].state == UNTESTABLE for i in range(lo + 1, hi)) else "found"
    return answer(kind, lo, hi)
