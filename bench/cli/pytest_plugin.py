"""pytest plugin (entry point `pytest11: peft_bench`): scenario files as test items.

`pytest scenarios/` (or `pytest scenarios/hotswap_alpha.toml`) collects each scenario's matrix as one item
per case, named by the case id, so `-k` selects by scenario, precision, compile setting or hotswap path.
Each item runs its case in its own worker process, exactly as `peft-bench run` does (bench.runner.launch.run_one),
and the verdict becomes pytest's outcome (VERDICT_OUTCOMES). results.json, results.csv and summary.md are
written into --peft-bench-out as the run goes, as `peft-bench run` writes them.

Scenario files are collected only from paths given on the command line: a bare `pytest` (testpaths) never
runs scenarios, so the project's own test suite stays what it is. A .toml file is a scenario file when it
has a `[scenario]` table; any other TOML (pyproject.toml) is left alone.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from bench import RESULTS_SCHEMA_VERSION, VERDICT_RULES_VERSION, __version__
from bench.cli.options import timeout_seconds
from bench.cli.paths import check_out_folder
from bench.engine.sources.cache import default_cache_root
from bench.errors import BenchInputError
from bench.report.answers_view import summary_lines
from bench.results.environment import collect
from bench.results.failures import unverified_reason
from bench.results.records import Results
from bench.results.store import holds_results, save
from bench.results.summary import write_summary
from bench.runner.launch import RunOptions, not_run, run_one
from bench.runner.run import default_out_dir
from bench.runner.saving import SaveClock
from bench.scenario import load_scenario
from bench.spec.cases import expand

# Verdict -> (pytest outcome, message prefix). Policy as data: what each verdict means to a pytest user.
# An xpass fails, like pytest's strict xfail: the known_failure marker must go when upstream fixes the bug.
VERDICT_OUTCOMES: dict[str, tuple[str, str]] = {
    "pass": ("pass", ""),
    "fail": ("fail", ""),
    "xfail": ("xfail", ""),
    "xpass": ("fail", "XPASS: "),
    "error": ("fail", "ERROR: "),
    "skip": ("skip", ""),
    "not_run": ("fail", "NOT RUN: "),
}

_SCENARIO_TABLE = re.compile(r"^\s*\[scenario\]\s*(#.*)?$", re.MULTILINE)
_STATE_KEY = pytest.StashKey["_RunState"]()


def outcome_for(verdict: str, reason: str) -> tuple[str, str]:
    """(outcome, message) for a case's verdict and one-line reason."""
    outcome, prefix = VERDICT_OUTCOMES[verdict]
    return outcome, (prefix + reason).strip()


def is_scenario_file(path: Path) -> bool:
    if path.suffix != ".toml":
        return False
    try:
        return bool(_SCENARIO_TABLE.search(path.read_text(encoding="utf-8", errors="replace")))
    except OSError:
        return False


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("peft-bench", "peft-bench scenarios as tests")
    group.addoption(
        "--peft-bench-out",
        type=Path,
        default=None,
        help="folder for results.json, results.csv, summary.md and worker logs (default: a new reports/run-*)",
    )
    group.addoption(
        "--peft-bench-cache",
        type=Path,
        default=None,
        help="cache for built models and adapters (default: $PEFT_BENCH_CACHE or ~/.cache/peft-bench)",
    )
    group.addoption(
        "--peft-bench-timeout",
        type=float,
        default=None,
        help="per-case timeout in seconds (overrides timeout_s)",
    )
    group.addoption(
        "--peft-bench-worker",
        choices=("fork", "spawn"),
        default=None,
        help="how each case's worker starts, as `peft-bench run --worker`: 'fork' from a preloaded worker "
        "(default where os.fork exists), 'spawn' a fresh `python -m bench.worker`",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STATE_KEY] = _RunState(config)


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    # Only from paths the user named: `pytest` with testpaths (the project's own suite) collects none.
    if parent.config.args_source != pytest.Config.ArgsSource.ARGS:
        return None
    if not is_scenario_file(file_path):
        return None
    return ScenarioFile.from_parent(parent, path=file_path)


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[_STATE_KEY].selected(
        [item for item in session.items if isinstance(item, ScenarioCaseItem)]
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus) -> None:
    session.config.stash[_STATE_KEY].finish(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    state = config.stash[_STATE_KEY]
    if state.out_dir is not None:
        terminalreporter.write_line(
            f"peft-bench: results in {state.out_dir}/results.json, summary in {state.out_dir}/summary.md"
        )


class ScenarioFile(pytest.File):
    def collect(self):
        scenario = load_scenario(self.path)
        for case in expand(scenario):
            yield ScenarioCaseItem.from_parent(self, name=case.id, case=case)

    def repr_failure(self, excinfo, style=None):
        # A bad scenario file is a collection error whose text is our message (file, step, field), no traceback.
        if excinfo.errisinstance(BenchInputError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)


class ScenarioCaseItem(pytest.Item):
    def __init__(self, *, case, **kwargs):
        super().__init__(**kwargs)
        self.case = case
        # -k matches names; these make `-k fp32`, `-k aot_eager`, `-k peft` or `-k gate` (a tag) select cases.
        self.extra_keyword_matches.update({case.scenario.name, *case.params.values(), *case.scenario.tags})

    def runtest(self) -> None:
        result = self.config.stash[_STATE_KEY].run(self.case)
        outcome, message = outcome_for(result.verdict, result.reason)
        if outcome == "fail":  # the message stays one line; where to look goes in a report section
            log = result.worker.log
            tail = result.worker.log_tail or result.worker.traceback_tail
            if log or tail:
                self.add_report_section("call", "peft-bench worker", "\n".join([f"log: {log}", *tail]))
        if why := unverified_reason(result):
            # A pass on one oracle's word: pytest has no such outcome, so it says so where a reader looks (a
            # warning in the summary, a report section) and in --junitxml (a property), never a plain pass.
            self.user_properties.append(("unverified", why))
            self.add_report_section("call", "peft-bench", f"unverified pass: {why}")
            warnings.warn(PeftBenchUnverified(f"{self.case.id}: unverified pass: {why}"), stacklevel=1)
        if outcome == "skip":
            pytest.skip(message)
        if outcome == "xfail":
            pytest.xfail(message)
        if outcome == "fail":
            pytest.fail(message, pytrace=False)

    def reportinfo(self):
        return self.path, None, self.case.id


class PeftBenchUnverified(UserWarning):
    """A scenario case passed with a step no pair of oracles verified (bench.results.failures.unverified_reason)."""


class _RunState:
    """What one pytest session's scenario items share: the output folder and the results so far.

    Nothing is written until a case runs: `--collect-only`, or a selection that deselects every case,
    leaves no reports/ folder behind.
    """

    def __init__(self, config: pytest.Config):
        self.config = config
        self.out_dir: Path | None = None
        self.cases: list = []
        self.done: dict = {}
        self._opts = None
        self._saves = SaveClock()
        self._env = None
        self._created_at = ""
        self._refusal = ""  # why no case may run in this process (a pytest-xdist worker)
        self._running: str | None = None  # the case whose worker runs now (an interrupt kills it)

    def selected(self, items: list[ScenarioCaseItem]) -> None:
        ids: dict[str, ScenarioCaseItem] = {}
        for item in items:
            other = ids.setdefault(item.case.id, item)
            if other is not item:
                raise pytest.UsageError(
                    f"case {item.case.id!r} is in {item.case.scenario.source_file} and in "
                    f"{other.case.scenario.source_file}: scenario names must be unique across the selection"
                )
        self.cases = [item.case for item in items]
        if items:
            self._check_options()

    def _check_options(self) -> None:
        """The options `peft-bench run` refuses, refused before any case here too: each was found to lose or
        misfile results (an existing run replaced by this session's, two xdist workers writing one
        results.json, a timeout of 0 or inf taken as none)."""
        opt = self.config.getoption
        if hasattr(self.config, "workerinput"):
            # A pytest-xdist worker: every worker would write the one results folder. A usage error raised in
            # a worker is an xdist INTERNALERROR, so each case fails with the reason instead, writing nothing.
            self._refusal = (
                "peft-bench scenarios run in one pytest process: leave out -n (pytest-xdist); each case already "
                "runs in a worker process of its own, and `peft-bench run --jobs N` runs several at once"
            )
            return
        try:
            if (out := opt("peft_bench_out")) is not None:
                check_out_folder(out)
                if holds_results(out):
                    raise BenchInputError(
                        "--peft-bench-out: this folder holds the results of another run; give another folder",
                        source=str(out),
                    )
            if (timeout := opt("peft_bench_timeout")) is not None:
                timeout_seconds(timeout, "--peft-bench-timeout")
        except BenchInputError as exc:
            raise pytest.UsageError(str(exc)) from None

    def run(self, case):
        if self._refusal:
            pytest.fail(self._refusal, pytrace=False)
        if self._opts is None:
            self._start()
        self._running = case.id
        result = run_one(case, self._opts)
        self._running = None
        self.done[case.id] = result
        # Rewritten as cases finish (after each while a write is cheap: bench.runner.saving): a killed session
        # keeps the cases of its last write, and each case's own file in cases/; the session's end writes all.
        self._saves.maybe(lambda: save(self.out_dir, self._results()))
        return result

    def _start(self) -> None:
        import datetime as _dt

        opt = self.config.getoption
        self.out_dir = opt("peft_bench_out") or default_out_dir(self.config.invocation_params.dir / "reports")
        self._opts = RunOptions(
            out_dir=self.out_dir,
            cache_root=opt("peft_bench_cache") or default_cache_root(),
            timeout_s=opt("peft_bench_timeout"),
            **({"worker": opt("peft_bench_worker")} if opt("peft_bench_worker") else {}),
            command=("pytest", *self.config.invocation_params.args),
        )
        self._created_at = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        self._env = collect()
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def finish(self, *, interrupted: bool) -> None:
        if self._opts is None:
            return
        results = self._results(interrupted=interrupted)
        save(self.out_dir, results)
        write_summary(self.out_dir, results, summary_lines(results))

    def _results(self, *, interrupted: bool = False):
        def missing(c) -> str:
            if not interrupted:
                return "not run in this pytest session"
            if c.id == self._running:  # as `peft-bench run` says it: this case's worker was running
                return "interrupted while this case ran (its worker was killed)"
            return "interrupted before this case ran"

        return Results(
            schema_version=RESULTS_SCHEMA_VERSION,
            verdict_rules=VERDICT_RULES_VERSION,
            suite_version=__version__,
            created_at=self._created_at,
            environment=self._env,
            scenario_set=tuple(sorted({c.scenario.name for c in self.cases})),
            cases=tuple(self.done.get(c.id) or not_run(c, missing(c)) for c in self.cases),
            command=self._opts.command,
            interrupted=interrupted,
            options=self._opts.settings,
        )
