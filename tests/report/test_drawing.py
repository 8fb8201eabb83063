"""bench.report.drawing: the report's figures drawn partly in a helper process give the same PNGs as drawn
in one process; the helper draws each figure as it is planned; whatever the helper fails to deliver (it
raised, it died) is drawn here, and the helper never outlives its block."""

from __future__ import annotations

import multiprocessing
import operator
import os
import signal
import time
from pathlib import Path

import pytest

from bench.report import drawing
from bench.report.build import write_reports
from bench.report.drawing import Figure, Painter
from bench.results.store import load

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "reports" / "baseline" / "results.json"

pytest.importorskip("matplotlib")
needs_two_cpus = pytest.mark.skipif(drawing.cpus() < 2, reason="the helper is used only with a second CPU")


def _die_in_helper(rows):
    """A plot function that kills the process drawing it when that is the helper; here it draws nothing."""
    if multiprocessing.parent_process() is not None:
        os.kill(os.getpid(), signal.SIGKILL)
    return None


@pytest.fixture(scope="module")
def baseline():
    return load(BASELINE)


@pytest.fixture(scope="module")
def alone(baseline):
    return drawing.draw(drawing.planned(baseline))


def _claimed_by_helper(painter: Painter, n: int, timeout_s: float = 60) -> None:
    """Wait until the helper has claimed the n-th figure sent to it (it imports matplotlib first, about 1.5 s)."""
    deadline = time.monotonic() + timeout_s
    while painter._claims[n] != drawing.HELPER:
        assert time.monotonic() < deadline, f"the helper did not claim figure {n} in {timeout_s} s"
        time.sleep(0.02)


def _no_helper_left() -> None:
    assert not [p for p in multiprocessing.active_children() if p.name == "peft-bench-figures"]


@pytest.mark.slow
@needs_two_cpus
def test_the_helper_draws_the_same_pngs(baseline, alone):
    with Painter() as painter:
        painter.share(drawing.planned(baseline))
        _claimed_by_helper(painter, 0)  # as it does while the report's text is rendered here
        shared = painter.plots()
    assert painter.shared >= 1  # the helper really drew its part
    assert list(shared) == list(alone)  # report order
    assert {k: p and p.png for k, p in shared.items()} == {k: p and p.png for k, p in alone.items()}
    assert sum(p is not None for p in shared.values()) >= 4  # the control: there were figures to compare
    _no_helper_left()


@pytest.mark.slow
@needs_two_cpus
def test_the_report_is_the_same_with_and_without_the_helper(baseline, tmp_path):
    a = write_reports(baseline, tmp_path / "a", ("html", "md"))
    b = write_reports(baseline, tmp_path / "b", ("html", "md"), draw_helper=False)
    for name in ("report.html", "report.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert len(a.paths) == len(b.paths)
    _no_helper_left()


@needs_two_cpus
def test_what_the_helper_raised_is_raised_here():
    figures = [Figure("ok", drawing.plots.switch_plot, ([],)), Figure("a", operator.truediv, (1, 0))]
    figures.append(Figure("b", operator.add, (1, 2)))
    with Painter() as painter:
        painter.share(figures)
        assert painter._sent == [1, 2]  # the figure without rows is never sent
        _claimed_by_helper(painter, 0)  # "a": the helper raises on it
        with pytest.raises(ZeroDivisionError):
            painter.plots()
    assert painter.shared == 0
    _no_helper_left()


@needs_two_cpus
def test_a_helper_that_dies_is_replaced_by_drawing_here():
    figures = [Figure("x", _die_in_helper, ([1],)), Figure("y", _die_in_helper, ([1],))]
    with Painter() as painter:
        painter.share(figures)
        _claimed_by_helper(painter, 0)  # "x": the helper dies drawing it
        assert painter.plots() == {"x": None, "y": None}
    assert painter.shared == 0
    _no_helper_left()


def test_without_the_helper_everything_is_drawn_here():
    figures = [Figure("a", operator.add, (1, 2)), Figure("b", operator.add, (3, 4))]
    with Painter(helper=False) as painter:
        painter.share(figures)
        assert painter._sent == []
        assert painter.plots() == {"a": 3, "b": 7}
    assert painter.shared == 0


def _slow_sum(a, b):
    time.sleep(0.5)  # long enough that the other process claims the next figure meanwhile
    return a + b


@needs_two_cpus
def test_each_figure_is_drawn_by_the_helper_while_the_next_is_planned():
    """planned() works out each figure's rows in turn: the helper must get each figure as it is yielded, not
    once all are planned. Here the plan waits for the helper to claim each figure before yielding the next,
    which only a helper fed one figure at a time can do."""
    with Painter() as painter:

        def plan():
            for n in range(3):
                yield Figure(f"f{n}", _slow_sum, ([n], [1]))
                _claimed_by_helper(painter, n)

        painter.share(plan())
        assert painter.plots() == {"f0": [0, 1], "f1": [1, 1], "f2": [2, 1]}
    assert painter.shared == 3
    _no_helper_left()
    # Control: figures without rows are never sent, so the helper never claims one and the wait fails.
    with Painter() as painter:
        painter.share([Figure("empty", _slow_sum, ([], [1]))])
        with pytest.raises(AssertionError, match="did not claim"):
            _claimed_by_helper(painter, 0, timeout_s=3)
        assert painter.plots() == {"empty": [1]}
    _no_helper_left()


@needs_two_cpus
def test_a_figure_is_drawn_once_by_whoever_claims_it_first():
    """The helper has claimed the first figure; this process takes back the others, from the last."""
    figures = [Figure(f"f{n}", _slow_sum, ([n], [1])) for n in range(4)]
    with Painter() as painter:
        painter.share(figures)
        _claimed_by_helper(painter, 0)
        shared = painter._claims  # plots() lets go of it
        out = painter.plots()
        claims = list(shared[:4])
    assert out == {f"f{n}": [n, 1] for n in range(4)}
    assert claims[0] == drawing.HELPER and claims.count(drawing.HERE) >= 1
    assert painter.shared == claims.count(drawing.HELPER)
    _no_helper_left()


@needs_two_cpus
def test_what_cannot_travel_and_a_second_share_are_drawn_here():
    local = Figure("local", lambda rows: len(rows), ([1, 2],))  # a lambda cannot be pickled
    with Painter() as painter:
        painter.share([local, Figure("a", operator.add, (1, 2))])
        painter.share([Figure("b", operator.add, (3, 4))])  # the helper was told there are no more
        assert painter._sent == [1]
        assert painter.plots() == {"local": 2, "a": 3, "b": 7}
    _no_helper_left()


@needs_two_cpus
def test_leaving_the_block_early_stops_the_helper():
    with pytest.raises(KeyError), Painter() as painter:
        painter.share([Figure("a", operator.add, (1, 2)), Figure("b", operator.add, (3, 4))])
        raise KeyError("the report failed while the helper worked")
    _no_helper_left()


@needs_two_cpus
@pytest.mark.parametrize("claims_released_first", [False, True])
def test_a_helper_stopped_while_it_starts_prints_nothing(capfd, claims_released_first):
    """A report with nothing to draw (every case errored) was done before its helper had started, and the
    helper printed a FileNotFoundError traceback: the claims' lock it rebuilds at start had been released.
    Stopped as a finished report stops it, the helper exits without a word. Control: with the claims
    released before it stops (the old order), the same helper prints the traceback."""
    painter = Painter().__enter__()
    process = painter._process
    if claims_released_first:
        painter._claims = None  # the lock goes with its last reference
    painter._stop(graceful=True)  # gives it 5 s to end on its own: it starts, then meets the closed pipe
    process.join(30)
    err = capfd.readouterr().err
    assert ("FileNotFoundError" in err) == claims_released_first, err[-2000:]
    _no_helper_left()


def _blocked_signals(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)
    raise AssertionError("no SigBlk line")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal mask from /proc (Linux)")
@needs_two_cpus
def test_the_helper_starts_with_ctrl_c_blocked_and_this_process_does_not_keep_it():
    """Ctrl-C reaches the whole process group; the helper must not print a traceback of its own (its start and
    imports take a second), so it is started with SIGINT blocked. The report's process stops it as it
    leaves, and gets its own Ctrl-C as before."""
    sigint = 1 << (signal.SIGINT - 1)
    assert not _blocked_signals(os.getpid()) & sigint
    with Painter() as painter:
        assert painter._process is not None
        assert _blocked_signals(painter._process.pid) & sigint
        assert not _blocked_signals(os.getpid()) & sigint  # restored here at once
    _no_helper_left()
    # Control: a process spawned the plain way has SIGINT unblocked, so the check above can fail.
    ctx = multiprocessing.get_context("spawn")
    plain = ctx.Process(target=signal.pause, daemon=True)
    plain.start()
    try:
        assert not _blocked_signals(plain.pid) & sigint
    finally:
        plain.terminate()
        plain.join()


_PINNED = """
import gc, sys, weakref
from pathlib import Path
gc.disable()  # only reference counts free the run: whatever a cycle holds stays
from bench.report import drawing
from bench.report.build import write_reports
from bench.results.store import load
if sys.argv[1] == "own-stack":
    drawing.drawn_apart = lambda figure: figure.drawn()  # the control: drawn on the report's own stack
results = load(Path(sys.argv[2]))
write_reports(results, Path(sys.argv[3]), ("html",), draw_helper=False)
ref = weakref.ref(results)
del results
print("held" if ref() is not None else "freed")
"""


@pytest.mark.parametrize("how, expected", [("apart", "freed"), ("own-stack", "held")])
def test_drawing_here_leaves_nothing_that_holds_the_run(tmp_path, how, expected):
    """Matplotlib's first drawing in a process leaves pyparsing's cached exceptions, whose tracebacks hold
    every frame of the stack they were raised on: the report's frames, and so the run it reported. Drawn on a
    thread of its own, the run is freed when the caller lets go of it. A fresh interpreter each: only the
    first drawing in a process leaves them."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _PINNED, how, str(BASELINE), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
