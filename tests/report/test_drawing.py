"""bench.report.drawing: the report's figures drawn partly in a helper process give the same PNGs as drawn
in one process; whatever the helper fails to deliver (it raised, it died) is drawn here, and the helper never
outlives its block."""

from __future__ import annotations

import multiprocessing
import operator
import os
import signal
from pathlib import Path

import pytest

from bench.report import drawing
from bench.report.build import write_reports
from bench.report.drawing import Figure, Painter
from bench.results.store import load

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "reports" / "baseline" / "results.json"

pytest.importorskip("matplotlib")
needs_two_cpus = pytest.mark.skipif(drawing._cpus() < 2, reason="the helper is used only with a second CPU")


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


def _no_helper_left() -> None:
    assert not [p for p in multiprocessing.active_children() if p.name == "peft-bench-figures"]


@pytest.mark.slow
@needs_two_cpus
def test_the_helper_draws_the_same_pngs(baseline, alone):
    with Painter() as painter:
        painter.share(drawing.planned(baseline))
        shared = painter.plots()
    assert painter.shared >= 2  # the helper really drew its part
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
    figures.append(Figure("b", operator.truediv, (1, 0)))
    with Painter() as painter:
        painter.share(figures)
        assert painter._theirs  # sent to the helper, which raises
        with pytest.raises(ZeroDivisionError):
            painter.plots()
    assert painter.shared == 0
    _no_helper_left()


@needs_two_cpus
def test_a_helper_that_dies_is_replaced_by_drawing_here():
    figures = [Figure("x", _die_in_helper, ([1],)), Figure("y", _die_in_helper, ([1],))]
    with Painter() as painter:
        painter.share(figures)
        assert [f.key for f in painter._theirs] == ["x"]
        assert painter.plots() == {"x": None, "y": None}
    assert painter.shared == 0
    _no_helper_left()


def test_without_the_helper_everything_is_drawn_here():
    figures = [Figure("a", operator.add, (1, 2)), Figure("b", operator.add, (3, 4))]
    with Painter(helper=False) as painter:
        painter.share(figures)
        assert painter._theirs == []
        assert painter.plots() == {"a": 3, "b": 7}
    assert painter.shared == 0


@needs_two_cpus
def test_leaving_the_block_early_stops_the_helper():
    with pytest.raises(KeyError), Painter() as painter:
        painter.share([Figure("a", operator.add, (1, 2)), Figure("b", operator.add, (3, 4))])
        raise KeyError("the report failed while the helper worked")
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
