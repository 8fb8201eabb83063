"""Many results files read as one history: each run with a stable id and its start time, in time order.

What the site (bench.report.site) and the published dataset (bench.report.dataset) read. A run's id is its
start time and a hash of its content, so the same run published twice gets the same file names, and two
different runs started in the same second do not collide. The host's name is left out of what either
writes unless asked for (`without_hostname`): a published page or dataset should not name the machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from bench.errors import BenchInputError, naming_file
from bench.results.atomic import replace_atomically
from bench.results.records import Results
from bench.results.store import load
from bench.results.writing import write_json

# The scheduler facts that name a machine: Slurm's node always; a Kubernetes job's id is its pod's name, which is
# the pod's host name (bench.cli.ci.scheduler_from_env).
HOST_KEYS = ("node",)
HOST_KEYS_BY_KIND = {"kubernetes": ("job_id",)}


_Started = TypeVar("_Started")  # a Run, or a record of one with its started_at and run_id


@dataclass(frozen=True)
class Run:
    source: str  # the path it was read from, as given
    results: Results
    run_id: str  # <start time, UTC, compact>-<8 hex of the content without the host's name>
    started_at: _dt.datetime  # the run's recorded start (Results.created_at), timezone-aware
    # The results.json text without the host's name, exactly as run_id hashed it, kept in a file where the
    # reader asked for it (load_runs' `spool`): a site copies it instead of encoding every case again.
    text: Path | None = None

    @property
    def date(self) -> str:
        return self.started_at.strftime("%Y-%m-%d")


def without_hostname(results: Results) -> Results:
    """The results with every field that names a host emptied: the environment's hostname (""), each case's
    worker.hostname (None, as in files never merged), the scheduler facts that name one (HOST_KEYS), and a
    case's worker.job where it is one of those names (a merged Kubernetes shard's pod)."""
    sched = results.scheduler
    dropped = (*HOST_KEYS, *HOST_KEYS_BY_KIND.get(sched.get("kind", ""), ()))
    hosts = {results.environment.hostname, *(sched[k] for k in dropped if k in sched)}
    hosts |= {c.worker.hostname for c in results.cases if c.worker.hostname}

    def clean(c):
        job = None if c.worker.job in hosts else c.worker.job
        if c.worker.hostname is None and job == c.worker.job:
            return c
        return dataclasses.replace(c, worker=dataclasses.replace(c.worker, hostname=None, job=job))

    return dataclasses.replace(
        results,
        environment=dataclasses.replace(results.environment, hostname=""),
        cases=tuple(clean(c) for c in results.cases),
        scheduler={k: v for k, v in sched.items() if k not in dropped},
    )


def started_at(results: Results, source: str) -> _dt.datetime:
    try:
        when = _dt.datetime.fromisoformat(results.created_at)
    except ValueError:
        raise BenchInputError(
            f"not an ISO 8601 time: {results.created_at!r}", source=source, field="created_at"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=_dt.UTC)  # files record UTC


class _Hashing:
    """A text file that hashes what is written to it, and passes the same bytes on to `copy` where given: a
    run's id from its results.json text, without the text (433 MB at 20,000 cases) ever held whole."""

    def __init__(self, copy: BinaryIO | None = None) -> None:
        self.sha = hashlib.sha256()
        self.copy = copy

    def write(self, text: str) -> None:
        data = text.encode()
        self.sha.update(data)
        if self.copy is not None:
            self.copy.write(data)


def run_id(results: Results, when: _dt.datetime, copy: BinaryIO | None = None) -> str:
    """`copy`: a binary file that gets the hashed text too (the run's results.json without the host's name)."""
    digest = _Hashing(copy)
    write_json(digest, without_hostname(results), None)  # the text save writes, hashed as it is made
    digest = digest.sha.hexdigest()[:8]
    return f"{when.astimezone(_dt.UTC):%Y%m%dT%H%M%SZ}-{digest}"


def load_runs(paths: list[Path], spool: Path | None = None) -> list[Run]:
    """Every path read (a results.json or a folder holding one) before anything is written: one error that
    names each bad one, so a publish or a site never goes out with a run silently missing. The same run
    given twice (the same id) is kept once. In order of start time. `spool`: a folder (the caller's, and the
    caller removes it) where each run's hashed text is written as its id is worked out (Run.text)."""
    runs: dict[str, Run] = {}
    bad: list[str] = []
    for path in paths:
        source = str(path)
        try:
            results = load(path)
            when = started_at(results, source)
        except BenchInputError as exc:
            bad.append(str(exc))
            continue
        # With a spool, one file per input read (a run given twice writes twice; the spool goes whole).
        text = None if spool is None else Path(spool) / f"{len(runs) + len(bad)}-results.json"
        try:
            with open(text, "wb") if text else contextlib.nullcontext() as copy:
                rid = run_id(results, when, copy)
        except OSError as exc:
            named = naming_file(exc, text)
            if named is not exc:
                raise named from None
            raise
        runs.setdefault(rid, Run(source, results, rid, when, text))
    if bad:
        more = f" ({len(bad)} of {len(paths)} inputs)" if len(bad) > 1 else ""
        raise BenchInputError(f"cannot read every input{more}; nothing was written:\n  " + "\n  ".join(bad))
    if not runs:
        raise BenchInputError("no results given")
    return in_start_order(runs.values())


def in_start_order(runs: Iterable[_Started]) -> list[_Started]:
    """Runs by start time (and id, for two started in the same second): a history's and a card's order. Runs,
    or anything with their `started_at` and `run_id` (the dataset card's rows, bench.report.dataset.card)."""
    return sorted(runs, key=lambda r: (r.started_at, r.run_id))


def write_results_json(path: Path, results: Results) -> None:
    """A results.json for these results at `path`, atomically: the text bench.results.store.save writes (its
    one-pass writer, each case encoded by the json module's C encoder), written straight to the file. A site
    or dataset writes a run's copy so where no spooled text is at hand (place_results_json); the generic
    to_dict and the indenting encoder it used before took about 25 s at 4,000 cases (bench/results/runs.py at
    c46004a), this about 2 s."""

    def dump(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            write_json(f, results, None)

    replace_atomically(path, dump)


@contextlib.contextmanager
def spool_beside(out: Path, with_hostname: bool = False) -> Iterator[Path | None]:
    """A folder beside `out` (a site or dataset folder) for the runs' texts as load_runs hashes them (its
    `spool`), removed at the end whatever happened. Beside `out`: on its file system, so each text is moved
    into place (a rename), not copied. None `with_hostname`: a spooled text leaves the host's name out."""
    if with_hostname:
        yield None
        return
    parent = Path(out).absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{Path(out).name}.", suffix=".spool", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def for_publishing(runs: list[Run], with_hostname: bool) -> list[Run]:
    """The runs as a site or dataset writes them: without the host's name unless `with_hostname` (a spooled
    text, Run.text, has none either, so it is dropped where the name is kept)."""
    if with_hostname:
        return [dataclasses.replace(r, text=None) for r in runs]
    return [dataclasses.replace(r, results=without_hostname(r.results)) for r in runs]


def place_results_json(path: Path, run: Run) -> None:
    """The run's results.json at `path`: its spooled text moved there (the text run_id hashed, so no case is
    encoded again), else written from the records (write_results_json). Either way the file appears whole."""
    if run.text is None:
        write_results_json(path, run.results)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(run.text, path)  # a rename: the spool is beside the folder
    except OSError:  # another file system after all: copied and put in place whole
        replace_atomically(path, lambda tmp: shutil.copyfile(run.text, tmp))
