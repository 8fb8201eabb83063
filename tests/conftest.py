"""Shared fixtures. Real models and adapters only: built once per test session into a private cache."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.scenarios import (  # noqa: F401  (shared with the tests, which import them from here)
    EAGER,
    FAST_TIMING,
    LOAD_A,
    ONE_ADAPTER,
    ONE_ADAPTER_SEED_0,
    TINY_LLAMA,
    scenario_toml,
)

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = REPO / "scenarios"


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    # A per-session cache keeps tests independent of a user's ~/.cache; PEFT_BENCH_TEST_CACHE reuses one
    # across sessions when iterating locally.
    if os.environ.get("PEFT_BENCH_TEST_CACHE"):
        return Path(os.environ["PEFT_BENCH_TEST_CACHE"])
    return tmp_path_factory.mktemp("peft-bench-cache")


@pytest.fixture(scope="session", autouse=True)
def _runs_use_the_session_cache(cache_root):
    """Every run a test starts, in this process or a child, uses the session's cache, never the user's. A run
    appends itself to its cache's calibration file, which keeps the newest 20 runs per machine: two sessions
    of the suite's small runs (and a Slurm test's shards) had replaced every real run in ~/.cache's file."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PEFT_BENCH_CACHE", str(cache_root))
        yield


@pytest.fixture
def write_scenario(tmp_path):
    """Write a scenario file from (dedented) TOML text and return its path."""

    def write(text: str, name: str = "scenario.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def cli(capsys, monkeypatch):
    """`peft-bench ARGS` in this process (bench.cli.main.main), for tests about what a command does rather than
    about its process: its cases fork from this test process's preloaded worker, started once per test
    process instead of once per command (an import of torch, transformers and peft: ~6 s). The exit code
    and the two streams come back as a CompletedProcess. tests/cli/test_cli.py, the signal and hostile-run
    tests keep real processes."""

    def run(*args, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
        from bench.cli.main import main

        argv = [str(a) for a in args]
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["peft-bench", *argv])
        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["peft-bench", *argv], code, out, err)

    return run


# Text, not scenario_toml: tests edit it with str.replace, so its exact spelling is what they build on.
MINIMAL = """
[scenario]
name = "minimal"
model = "builtin:tiny-llama"

[matrix]
compile = ["aot_eager"]

[adapters.a]
rank = 4
alpha = 8
seed = 1

[[steps]]
op = "load_adapter"
adapter = "a"

[[steps]]
op = "compile"

[[steps]]
op = "forward"
"""


def fixed_environment(**changes):
    """A results file's Environment with fixed, made-up values (a test's runs differ only where it says)."""
    import dataclasses

    from bench.results.records import Environment

    env = Environment(
        python="3.11.7",
        platform="Linux",
        cpu="test-cpu",
        cpu_count=2,
        device="cpu",
        gpu=None,
        libraries={"torch": "2.13.0+cpu", "transformers": "5.23.0", "peft": "0.21.2"},
        suite_version="0.1.0",
        git_commit=None,
        hostname="host-a",
    )
    return dataclasses.replace(env, **changes)


# `nox -s tests` (every test not marked slow) keeps to its budget (6 minutes with its install, on two cores) only
# while its tests stay fast: a test not marked slow whose setup, call and teardown took more than this together
# is named at the end of the run, as one to mark `slow` or to make faster. The first test on a pytest-xdist
# worker that needs a session fixture (the built models, the preloaded worker) pays for it: such a name is
# the fixture's cost, and marking that test only hands the cost to the next.
UNMARKED_SLOW_S = 5.0
_unmarked_s: dict[str, float] = {}


def pytest_runtest_logreport(report) -> None:
    # Runs in the controlling process under pytest-xdist too (each worker's reports are sent there).
    if "slow" not in report.keywords:
        _unmarked_s[report.nodeid] = _unmarked_s.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    over = sorted(((s, n) for n, s in _unmarked_s.items() if s > UNMARKED_SLOW_S), reverse=True)
    if over:
        terminalreporter.section(f"tests not marked slow that took over {UNMARKED_SLOW_S:g} s")
        for seconds, nodeid in over:
            terminalreporter.line(f"{seconds:6.1f} s  {nodeid}")
