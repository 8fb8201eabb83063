"""The HTML report's figures: what each one draws, worked out here from the run, and the drawing itself,
done partly in a second process while this one writes the reports' text.

Why a second process: drawing is the report's largest fixed cost. Matplotlib lays out and renders every
label with FreeType, about 2 ms per label here, and the eight figures hold hundreds of labels. That is 9 s of
a 1,000-case report's 15 s on the 2-core machine kind, whatever the run's size. The figures depend only on
their rows, which are small, picklable frozen records (at most MAX_FIGURE_ROWS or MAX_TABLE_ROWS each).

How the work is shared: each figure is sent to the helper as soon as its rows are worked out (planned()
yields them one at a time, the costliest rows last), so the helper draws while this process works out the
next rows; at 20,000 cases working them out takes about 6 s, drawing them all about 9. When this process has
written the text, it takes back the figures the helper has not started, from the last, and draws them
itself. Who draws a figure is decided by a claim in memory both processes share, taken under its lock, so
each figure is drawn once. The PNGs are the same bytes wherever they are drawn.

The helper process is a probe in the house style: a context manager that always cleans up. It is spawned,
never forked: this process may hold pyarrow's and BLAS's threads, and a forked child inherits their locks but
not the threads. It starts at `Painter.__enter__`, before the rows are worked out, so its interpreter start
and its import of matplotlib (about 1.5 s) overlap that work. The pipe carries pickles between this
process and the child it spawned, never data read from a file. The helper starts with Ctrl-C (SIGINT)
blocked: the key reaches the whole process group, and the report's process stops the helper as it leaves.
Whatever the helper cannot deliver is drawn here instead, so a failure in the helper never changes the
report:
- it could not start;
- it died (the figures it had claimed are drawn here);
- it raised (that figure is drawn here, and the same error is then raised with its traceback here).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import pickle
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from bench.report import answers, data, flags, memory_data, pareto, plots, plots_memory, serving, training
from bench.report.figure import Plot
from bench.results.records import Results
from bench.spec.processes import claim, cpus, ctrl_c_blocked, stop


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


def _first(rows: list | data.Listed) -> tuple[list, str]:
    """The rows a figure draws (bench.report.data.MAX_FIGURE_ROWS), and what its caption says when cut."""
    cap = data.MAX_FIGURE_ROWS
    shown = data.as_listed(rows)
    rows, total = shown.rows, shown.total
    return (rows, "") if total <= cap else (rows[:cap], f"drawn: the first {cap} of {total} rows")


def planned(results: Results) -> Iterator[Figure]:
    """The report's figures, each yielded as soon as its rows are worked out: the cheap ones first, the
    answers' figure (the pooled medians' bootstrap intervals, and scipy's import) last, so that a helper
    draws the first ones meanwhile. REPORT_ORDER is the order they are shown in. Each plot draws at most
    MAX_FIGURE_ROWS of its table's rows (the memory and recompile figures at most the table's MAX_TABLE_ROWS:
    they summarise per case). A figure's height and drawing time grow with its rows: 20,000 of them made a PNG
    800,000 pixels tall, and 200 per figure were 15 s of the report's CPU."""
    latency, latency_note = _first(data.latency_listed(results, data.MAX_FIGURE_ROWS))
    # Only the rows a figure reads travel to the helper: `wrong` for the latency rows it draws.
    drawn = data.latency_steps(results)[: data.MAX_FIGURE_ROWS]
    wrong = {(c.case_id, s.index): w for c, s in drawn if (w := flags.wrong_output(s))}
    yield Figure("latency", plots.latency_plot, (latency, wrong), latency_note)
    yield Figure("memory", plots_memory.memory_plot, (memory_data.memory_listed(results).rows,))
    yield Figure("recompiles", plots_memory.recompile_plot, (memory_data.recompile_listed(results).rows,))
    growth, growth_note = _first(memory_data.growth_listed(results, data.MAX_FIGURE_ROWS))
    yield Figure("growth", plots_memory.growth_plot, (growth,), growth_note)
    serve, serve_note = _first(serving.serving_rows(results))
    yield Figure("serving", serving.serving_plot, (serve,), serve_note)
    train, train_note = _first(training.train_rows(results))
    yield Figure("training", plots.training_plot, (train,), train_note)
    switch, switch_note = _first([r for r in data.switch_rows(results) if r.op_ms is not None])
    yield Figure("switch", plots.switch_plot, (answers.with_run_reloads(results, switch),), switch_note)
    yield Figure("answers", pareto.pareto_plot, (answers.choices(results),))


REPORT_ORDER = ("answers", "latency", "serving", "switch", "training", "memory", "growth", "recompiles")


def in_report_order(plots_by_key: dict[str, Plot | None]) -> dict[str, Plot | None]:
    """The plots in REPORT_ORDER (any other key after them, as given)."""
    rank = {k: i for i, k in enumerate(REPORT_ORDER)}
    return dict(sorted(plots_by_key.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def draw(figures: Iterable[Figure]) -> dict[str, Plot | None]:
    """Each figure drawn in this process, by key, in REPORT_ORDER."""
    return in_report_order({f.key: drawn_apart(f) for f in figures})


def drawn_apart(figure: Figure) -> Plot | None:
    """figure.drawn() on a thread of its own, joined at once: what it raised is raised here.

    Why: matplotlib parses font and mathtext patterns with pyparsing, whose packrat cache keeps the
    exceptions it caught, with their tracebacks, and through them every frame of the stack they were raised
    on. Drawn on the report's own stack, those frames held the run being reported (every case's records)
    after the report was written, until the process ended: 3.4 s of collecting and freeing at exit at
    20,000 cases, and a run's memory kept by a caller that writes reports in a loop."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["plot"] = figure.drawn()
        except BaseException as exc:  # noqa: BLE001 - raised again below, in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="peft-bench-draw", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box.pop("error")
    return box.get("plot")


def _has_rows(f: Figure) -> bool:
    return bool(f.args[0])  # a plotting function draws nothing (None) for no rows


# Claims, one per figure sent to the helper (by the order it was sent in): who draws it.
FREE, HELPER, HERE = 0, 1, 2
MAX_SHARED = 32  # figures one report can send the helper (it has eight); any beyond are drawn here
RAISED = "raised"  # what the helper sends for a figure whose drawing raised


def _helper(conn: Any, claims: Any) -> None:
    """The helper process: imports matplotlib while the parent works out the rows, then draws each figure it
    is sent and can claim. When the parent has sent None (no more figures) and every claimed figure is drawn,
    it sends back {position: plot}, RAISED for a figure whose drawing raised (the parent then draws that one
    itself).

    A thread takes the figures off the pipe as they come: the parent must never wait on a full pipe while
    this process draws, nor this one on a parent that is not reading yet (so the plots go back at the end)."""
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def receive() -> None:
        try:
            while (item := conn.recv()) is not None:
                inbox.put(item)
        except BaseException:  # the parent went away, or sent what cannot be read: nothing to deliver
            inbox.put(EOFError)  # (the parent then draws here what this process was sent)
            return
        inbox.put(None)

    threading.Thread(target=receive, daemon=True).start()
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot  # noqa: F401 (the import is the point: it costs a second)

        out: dict[int, Plot | None | str] = {}
        while (item := inbox.get()) is not None:
            if item is EOFError:
                return
            i, figure = item
            if not claim(claims, i, HELPER, FREE):
                continue  # the parent took it back
            try:
                out[i] = figure.drawn()
            except Exception:
                out[i] = RAISED
        conn.send(out)
    except (EOFError, OSError):  # the parent went away: nothing to deliver
        pass
    finally:
        conn.close()


class Painter:
    """Draws a report's figures, some of them in a helper process when there is a second CPU for it.

        with Painter() as painter:
            painter.share(planned(results))  # each figure goes to the helper as it is planned
            ...  # render the text
            plots = painter.plots()  # what the helper has not started is drawn here; then its plots

    `helper=False` (or one CPU) draws everything here, in plots(). Leaving the block stops the helper, whatever
    happened inside it."""

    def __init__(self, *, helper: bool = True) -> None:
        self._want_helper = helper and cpus() >= 2 and plots.unavailable_reason() is None
        self._process: Any = None
        self._conn: Any = None
        self._claims: Any = None
        self._figures: list[Figure] = []  # every figure shared, in the order planned
        self._sent: list[int] = []  # those sent to the helper (positions in _figures), in the order sent
        self._told_done = False  # the helper has been told there are no more figures
        self.shared = 0  # figures the helper drew (for the tests: the helper really drew them)

    def __enter__(self) -> Painter:
        if self._want_helper:
            try:
                ctx = multiprocessing.get_context("spawn")
                parent, child = ctx.Pipe()
                claims = ctx.Array("b", MAX_SHARED)
                process = ctx.Process(
                    target=_helper, args=(child, claims), daemon=True, name="peft-bench-figures"
                )
                with ctrl_c_blocked():  # the helper is started with SIGINT blocked, and keeps it so
                    process.start()
                child.close()
                self._process, self._conn, self._claims = process, parent, claims
            except (OSError, RuntimeError, ValueError):  # no process to be had: everything is drawn here
                self._process = self._conn = self._claims = None
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop(graceful=False)  # after plots() there is nothing left; otherwise its work is not wanted

    def share(self, figures: Iterable[Figure]) -> None:
        """Send the helper each figure that has rows as soon as `figures` yields it (planned() works the rows
        out as it goes), then tell it that there are no more."""
        for figure in figures:
            self._figures.append(figure)
            if (
                self._told_done
                or self._conn is None
                or not _has_rows(figure)
                or len(self._sent) >= MAX_SHARED
            ):
                continue  # drawn here (after the first share(), the helper takes no more)
            try:
                self._conn.send((len(self._sent), figure))  # pickled whole before a byte is sent
                self._sent.append(len(self._figures) - 1)
            except (pickle.PicklingError, AttributeError, TypeError):  # cannot travel: drawn here
                continue
            except (OSError, ValueError, EOFError):  # the helper is gone: what it was sent is drawn here
                self._give_up()
        if self._conn is not None and not self._told_done:
            self._told_done = True
            try:
                self._conn.send(None)
            except (OSError, ValueError, EOFError):
                self._give_up()

    def plots(self) -> dict[str, Plot | None]:
        """Every figure's plot, in REPORT_ORDER: those never sent drawn here; of those sent, each the helper
        has not claimed taken back and drawn here, the last sent first; then the helper's plots received (or
        drawn here, where the helper did not deliver them)."""
        sent = set(self._sent)
        out = {f.key: drawn_apart(f) for i, f in enumerate(self._figures) if i not in sent}
        theirs = []
        for n in reversed(range(len(self._sent))):
            figure = self._figures[self._sent[n]]
            if self._claims is None or claim(self._claims, n, HERE, FREE):
                out[figure.key] = drawn_apart(figure)
            else:
                theirs.append(n)
        got = self._received(set(theirs))
        for n in sorted(theirs):
            figure = self._figures[self._sent[n]]
            if isinstance(got.get(n, RAISED), str):  # RAISED, or not delivered
                out[figure.key] = drawn_apart(figure)  # raises here what the helper's drawing raised
            else:
                out[figure.key] = got[n]
                self.shared += 1
        # Graceful only where the helper delivered (it is exiting on its own): one that was sent nothing, or
        # whose figures were all taken back, may still be importing matplotlib, and is not waited for.
        self._stop(graceful=bool(theirs))
        return in_report_order(out)

    def _received(self, wanted: set[int]) -> dict[int, Any]:
        """The helper's {position: plot}, once it has drawn what it claimed; {} where it died or closed the
        pipe first, or sent anything else."""
        conn, process = self._conn, self._process
        if conn is None or not wanted:
            return {}
        try:
            while not conn.poll(0.2):
                if not process.is_alive():  # died without a word (killed, out of memory)
                    return {}
            got = conn.recv()
        except (EOFError, OSError):
            return {}
        return got if isinstance(got, dict) and wanted <= got.keys() else {}

    def _give_up(self) -> None:
        self._sent = []
        self._stop(graceful=False)

    def _stop(self, *, graceful: bool) -> None:
        """graceful: the helper has delivered and is exiting on its own (it is given 5 s); otherwise it is
        stopped at once."""
        conn, process, claims = self._conn, self._process, self._claims
        self._conn = self._process = self._claims = None
        if conn is not None:
            conn.close()
        if process is not None:
            stop(process, grace_s=5 if graceful else 0)
        # Released only now: a spawned helper still starting rebuilds the claims' lock from its name, and a
        # lock released before that printed a FileNotFoundError traceback from the helper (a report with no
        # figure to draw was done before the helper had started).
        del claims
