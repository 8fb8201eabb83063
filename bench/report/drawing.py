"""The HTML report's figures: what each one draws, worked out here from the run, and the drawing itself,
done partly in a second process while this one writes the reports' text.

Why a second process: drawing is the report's largest fixed cost. Matplotlib lays out and renders every
label with FreeType, about 2 ms per label here, and the eight figures hold hundreds of labels. That is 9 s of
a 1,000-case report's 15 s on the 2-core machine kind, whatever the run's size. The figures depend only on
their rows, which are small, picklable frozen records (at most MAX_FIGURE_ROWS or MAX_TABLE_ROWS each). A
spawned process can draw some of them while this one renders the Markdown and the HTML text and then draws
the rest. The PNGs are the same bytes wherever they are drawn.

The helper process is a probe in the house style: a context manager that always cleans up. It is spawned,
never forked: this process may hold pyarrow's and BLAS's threads, and a forked child inherits their locks but
not the threads. It starts at `Painter.__enter__`, before the rows are worked out, so its interpreter start
and its import of matplotlib (about 1.5 s) overlap that work. The pipe carries pickles between this
process and the child it spawned, never data read from a file. The helper starts with Ctrl-C (SIGINT)
blocked: the key reaches the whole process group, and the report's process stops the helper as it leaves.
Whatever the helper cannot deliver is drawn here instead, so a failure in the helper never changes the
report:
- it could not start;
- it died;
- it raised (drawn here, the same error is then raised with its traceback in this process).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bench.report import answers, data, flags, pareto, plots, plots_memory, serving, training
from bench.report.figure import Plot
from bench.report.flags import WRONG
from bench.results.records import Results

# With fewer figures to draw than this, there is nothing to split: this process draws what there is.
MIN_FIGURES_TO_SHARE = 2


@dataclass(frozen=True)
class Figure:
    """One figure to draw: a plotting function of bench.report (pickled by name) and its rows."""

    key: str  # the report section it belongs to
    draw: Callable[..., Plot | None]
    args: tuple
    note: str = ""  # added to the figure's titles: which rows it draws when its table has more

    def drawn(self) -> Plot | None:
        plot = self.draw(*self.args)
        if plot is None or not self.note:
            return plot
        return dataclasses.replace(plot, titles=(*plot.titles, self.note))


def _first(rows: list) -> tuple[list, str]:
    """The rows a figure draws (bench.report.data.MAX_FIGURE_ROWS), and what its caption says when cut."""
    cap = data.MAX_FIGURE_ROWS
    return (rows, "") if len(rows) <= cap else (rows[:cap], f"drawn: the first {cap} of {len(rows)} rows")


def planned(results: Results) -> tuple[Figure, ...]:
    """The report's figures in report order. Each plot draws at most MAX_FIGURE_ROWS of its table's rows (the
    memory and recompile figures at most the table's MAX_TABLE_ROWS: they summarise per case). A figure's
    height and drawing time grow with its rows: 20,000 of them made a PNG 800,000 pixels tall, and 200 per
    figure were 15 s of the report's CPU."""
    cap = data.MAX_TABLE_ROWS
    wrong = {k: v for k, v in flags.output_labels(results).items() if v.startswith(WRONG)}
    latency, latency_note = _first(data.latency_rows(results))
    serve, serve_note = _first(serving.serving_rows(results))
    switch, switch_note = _first([r for r in data.switch_rows(results) if r.op_ms is not None])
    train, train_note = _first(training.train_rows(results))
    growth, growth_note = _first(data.growth_series(results))
    # Only the rows a figure reads travel to the helper: `wrong` for the latency rows it draws.
    shown = {(r.case_id, r.step) for r in latency}
    return (
        Figure("answers", pareto.pareto_plot, (answers.choices(results),)),
        Figure(
            "latency",
            plots.latency_plot,
            (latency, {k: v for k, v in wrong.items() if k in shown}),
            latency_note,
        ),
        Figure("serving", serving.serving_plot, (serve,), serve_note),
        Figure("switch", plots.switch_plot, (answers.with_run_reloads(results, switch),), switch_note),
        Figure("training", plots.training_plot, (train,), train_note),
        Figure("memory", plots_memory.memory_plot, (data.memory_rows(results)[:cap],)),
        Figure("growth", plots_memory.growth_plot, (growth,), growth_note),
        Figure("recompiles", plots_memory.recompile_plot, (data.recompile_rows(results)[:cap],)),
    )


def draw(figures: Sequence[Figure]) -> dict[str, Plot | None]:
    """Each figure drawn in this process, by key."""
    return {f.key: f.drawn() for f in figures}


def _has_rows(f: Figure) -> bool:
    return bool(f.args[0])  # a plotting function draws nothing (None) for no rows


def _helper(conn: Any) -> None:
    """The helper process: imports matplotlib while the parent works out the rows, then draws what it is
    sent and sends back the plots, or None if drawing raised (the parent then draws those itself)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot  # noqa: F401 (the import is the point: it costs a second)

        figures = conn.recv()
        try:
            out: dict[str, Plot | None] | None = draw(figures)
        except Exception:
            out = None
        conn.send(out)
    except (EOFError, OSError):  # the parent went away (or sent nothing): nothing to deliver
        pass
    finally:
        conn.close()


@contextlib.contextmanager
def _ctrl_c_blocked() -> Iterator[None]:
    """SIGINT blocked while the helper is started. A spawned process keeps the signal mask it was started
    with, through exec and Python's start-up, so the helper never sees Ctrl-C: its start and imports take
    about a second, where Ctrl-C would print a traceback of its own. The report's process gets a Ctrl-C of
    these milliseconds as soon as the mask is restored."""
    if not hasattr(signal, "pthread_sigmask"):  # not on POSIX: the helper is started as it is
        yield
        return
    # A spawn starts multiprocessing's resource tracker first, which blocks SIGINT for its own start and then
    # unblocks it: started before the mask is set, it cannot unblock it under the helper's start.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Painter:
    """Draws a report's figures, some of them in a helper process when there is a second CPU for it.

        with Painter() as painter:
            painter.share(planned(results))  # the helper starts on its part
            ...  # render the text
            plots = painter.plots()  # draws the rest here, then collects the helper's

    `helper=False` (or one CPU) draws everything here, in plots(). Leaving the block stops the helper, whatever
    happened inside it."""

    def __init__(self, *, helper: bool = True) -> None:
        self._want_helper = helper and _cpus() >= 2 and plots.unavailable_reason() is None
        self._process: Any = None
        self._conn: Any = None
        self._mine: list[Figure] = []
        self._theirs: list[Figure] = []
        self._order: list[str] = []
        self.shared = 0  # figures the helper drew (for the tests: the helper really drew them)

    def __enter__(self) -> Painter:
        if self._want_helper:
            try:
                ctx = multiprocessing.get_context("spawn")
                parent, child = ctx.Pipe()
                process = ctx.Process(target=_helper, args=(child,), daemon=True, name="peft-bench-figures")
                with _ctrl_c_blocked():  # the helper is started with SIGINT blocked, and keeps it so
                    process.start()
                child.close()
                self._process, self._conn = process, parent
            except (OSError, RuntimeError, ValueError):  # no process to be had: everything is drawn here
                self._process = self._conn = None
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop(graceful=False)  # after plots() there is nothing left; otherwise its work is not wanted

    def share(self, figures: Sequence[Figure]) -> None:
        """Send the helper its part: about half the figures that have rows, by their order (the first ones,
        which this process would draw last), keeping the rest to draw here."""
        self._order = [f.key for f in figures]
        drawable = [f for f in figures if _has_rows(f)]
        if self._conn is None or len(drawable) < MIN_FIGURES_TO_SHARE:
            self._mine = list(figures)
            return
        theirs = {f.key for f in drawable[: (len(drawable) + 1) // 2]}
        self._theirs = [f for f in figures if f.key in theirs]
        self._mine = [f for f in figures if f.key not in theirs]
        try:
            self._conn.send(self._theirs)
        except (OSError, ValueError, EOFError):  # the helper is gone: its part is drawn here
            self._give_up()

    def plots(self) -> dict[str, Plot | None]:
        """Every figure's plot, in the order share() was given: this process's part drawn now, then the
        helper's part received (or drawn here, where the helper did not deliver it)."""
        out = draw(self._mine)
        if self._theirs:
            theirs = self._received()
            if theirs is None:
                theirs = draw(self._theirs)  # raises here what the helper's drawing raised
            else:
                self.shared = len(theirs)
            out.update(theirs)
        self._stop(graceful=True)
        return {k: out[k] for k in self._order if k in out}

    def _received(self) -> dict[str, Plot | None] | None:
        conn, process = self._conn, self._process
        if conn is None:
            return None
        try:
            while not conn.poll(0.2):
                if not process.is_alive():  # died without a word (killed, out of memory)
                    return None
            got = conn.recv()
        except (EOFError, OSError):
            return None
        return got if isinstance(got, dict) and set(got) == {f.key for f in self._theirs} else None

    def _give_up(self) -> None:
        self._mine = [*self._theirs, *self._mine]
        self._theirs = []
        self._stop(graceful=False)

    def _stop(self, *, graceful: bool) -> None:
        """graceful: the helper has delivered and is exiting on its own (it is given 5 s); otherwise it is
        stopped at once."""
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if conn is not None:
            conn.close()
        if process is None:
            return
        if graceful:
            process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join()
