"""Issue 16, packaging: the known-broken transformers 5.24 + peft < 0.22 pair is refused at start-up with
the fix, the compat matrix can still run it on purpose, and a bisect probe of it is `untestable` with the
reason. The end-to-end tests install the real transformers 5.24.0 and 5.25.0 wheels into a probe folder
(bench.bisect), over this environment's peft 0.21.2: 5.25.0 with peft 0.21.2 is the pair a plain
`pip install -e .` resolves since 5.25.0 came out (seen 2026-12-06; it keeps 5.24's MIN_PEFT_VERSION 0.22.0)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.version import Version

from bench.spec.library_pairs import broken_pair
from tests.conftest import REPO
from tests.runner.test_interrupt_resume import _scenario

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

_VERSION = st.tuples(st.integers(0, 9), st.integers(0, 40), st.integers(0, 5)).map(
    lambda v: ".".join(map(str, v))
)


@settings(max_examples=300, deadline=None)
@given(transformers=_VERSION, peft=_VERSION, dev=st.booleans())
def test_broken_pair_rule(transformers, peft, dev):
    """300 generated (transformers, peft) pairs, some as .dev0 builds: refused exactly when
    transformers >= 5.24 and peft < 0.22."""
    t = transformers + (".dev0" if dev else "")
    want = Version(transformers).release >= (5, 24) and Version(peft).release < (0, 22)
    assert (broken_pair(t, peft) is not None) == want, (t, peft)


@pytest.mark.parametrize(
    ("transformers", "peft", "refused"),
    [
        ("5.24.0", "0.21.2", True),
        ("5.24.0.dev0", "0.21.2", True),
        ("5.25.0", "0.21.2", True),  # the newest transformers, over the newest peft (2026-12-06)
        ("6.0.0", "0.17.0", True),
        ("5.23.0", "0.21.2", False),  # the pair this suite is developed on
        ("5.24.0", "0.22.0", False),
        ("5.24.0", None, False),  # not installed: the import error says so, not this rule
        ("garbage", "0.21.2", False),
    ],
)
def test_directed_pairs(transformers, peft, refused):
    assert (broken_pair(transformers, peft) is not None) is refused


def test_cli_refuses_a_broken_pair_with_the_fix(tmp_path, capsys, monkeypatch):
    """With transformers 5.24.0 + peft 0.21.2 reported as installed: exit 2, the fix, nothing made.
    With --allow-known-broken-versions it goes on (to the next check: here a bad --memory-limit-mb).
    Control: the installed 5.23 / 0.21.2 pair is not refused (the other CLI tests run on it)."""
    import bench.cli.commands.run
    from bench.cli.main import main

    # the name the run command calls (bench.cli.commands.run imports it from bench.spec.library_pairs)
    monkeypatch.setattr(bench.cli.commands.run, "installed_versions", lambda: ("5.24.0", "0.21.2"))
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), str(REPO / "scenarios")]) == 2
    err = capsys.readouterr().err
    assert "known-broken pair" in err and "pip install 'transformers<5.24'" in err and not out.exists()
    args = ["run", "--allow-known-broken-versions", "--memory-limit-mb", str(10**15), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "known-broken" not in err and "more than this machine has" in err


def test_compat_session_runs_broken_pairs_on_purpose():
    """The nox compat session passes the flag, so its 5.24 row shows the library's failures, not our
    refusal (read from the session's own source: nox is not run here)."""
    import ast

    tree = ast.parse((REPO / "noxfile.py").read_text())
    compat = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "compat")
    runs = [
        [a.value for a in call.args if isinstance(a, ast.Constant)]
        for call in ast.walk(compat)
        if isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "run"
    ]
    bench_runs = [r for r in runs if r[:2] == ["peft-bench", "run"]]
    assert bench_runs and all("--allow-known-broken-versions" in r for r in bench_runs)


# The interrupt tests' one-adapter scenario, then calls that transformers 5.24 refuses with peft 0.21.
SCENARIO = (
    _scenario("broken-pair") + '[[steps]]\nop = "set_adapter"\nnames = ["a"]\n[[steps]]\nop = "forward"\n'
)


@pytest.mark.slow
@pytest.mark.parametrize("release", ["5.24.0", "5.25.0"])
def test_real_transformers_5_24_and_later_is_refused_by_run_and_untestable_in_bisect(
    release, tmp_path, cache_root
):
    """A bisect probe of `release` (installed for real into its probe folder, over peft 0.21.2):
    `untestable`, the reason the refusal with its fix. Then the same environment with
    --allow-known-broken-versions: the case fails on the library's own ValueError, which is what a user of
    the plain install met in every case before the refusal (the control: the rule is not a guess)."""
    from bench.bisect import criteria
    from bench.bisect.probe import Target, run_probe
    from bench.bisect.search import UNTESTABLE

    scenario = tmp_path / "broken.toml"
    scenario.write_text(SCENARIO)
    env_extra = {"PEFT_BENCH_CACHE": str(cache_root), "OMP_NUM_THREADS": "1"}
    # An earlier search's result in the probe folder (seen in reports/bisect: a rules-1 results.json beside
    # the new untestable probe): a probe that does not run must not leave it there.
    stale = tmp_path / "out" / f"transformers-{release}" / "results.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    record = run_probe(
        Target("transformers", "transformers"),
        release,
        [str(scenario)],
        criteria.parse("expectation:matches_reference"),
        (),
        tmp_path / "out",
        tmp_path / "envs",
        (REPO / "constraints" / "ci.txt").read_text(),
        extra_env=env_extra,
    )
    assert record.state == UNTESTABLE and record.stage == "run failed", record
    assert "known-broken pair" in record.reason and "transformers<5.24" in record.reason, record.reason
    assert release in record.imported
    assert not stale.exists(), "an earlier search's results.json outlived the probe"

    env = {**os.environ, **env_extra, "PYTHONPATH": os.pathsep.join([str(REPO), record.env])}
    out = tmp_path / "allowed"
    cmd = [sys.executable, "-m", "bench", "run", str(scenario), "--out", str(out), "-q"]
    proc = subprocess.run(
        [*cmd, "--allow-known-broken-versions"], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    from bench.results.store import load

    (case,) = load(out).cases
    assert case.verdict in ("fail", "error") and "peft" in case.reason.lower(), case.reason
    assert Path(record.env).is_dir()
