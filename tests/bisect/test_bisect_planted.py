"""A planted break: a local git repository of a tiny package whose commits introduce a bug (and later fix
it), with one commit in the range that does not import. The search must name the exact commit that
introduced the bug and skip the broken one, through the real pieces: commits from git, one --target
environment per commit built by pip from the checkout, cached, and an import check in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.bisect import envs, versions
from bench.bisect.probe import Target
from bench.bisect.search import BAD, GOOD, UNTESTABLE, bisect
from tests.conftest import FAST_TIMING, LOAD_A, REPO, scenario_toml

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "adapterlib"
version = "0.1.{n}"
"""
GOOD_CODE = "def scaling(alpha, rank):\n    return alpha / rank\n"
BUG_CODE = "def scaling(alpha, rank):\n    return 1.0  # the planted bug: the old scaling is kept\n"
BROKEN_CODE = "def scaling(alpha, rank)\n    return alpha / rank\n"  # a syntax error: does not import

# commit index -> (code, what it is)
HISTORY = [
    (GOOD_CODE, "good: initial"),
    (GOOD_CODE + "\n# docs\n", "good: docs"),
    (GOOD_CODE + "\n# docs\n# more\n", "good: more docs"),
    (GOOD_CODE + "\nVERSION = 3\n", "good: a constant"),
    (BROKEN_CODE, "untestable: a syntax error"),
    (GOOD_CODE + "\nVERSION = 5\n", "good: syntax fixed"),
    (BUG_CODE, "bad: the bug is introduced"),
    (BUG_CODE + "\n# docs\n", "bad: unrelated"),
    (BUG_CODE + "\n# more docs\n", "bad: unrelated again"),
    (GOOD_CODE, "good: the bug is fixed"),
]
FIRST_BAD, UNTESTABLE_AT, BAD_END = 6, 4, 8


def git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "PATH": "/usr/bin:/bin",
        "HOME": str(repo),
    }
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, list[str]]:
    repo = tmp_path_factory.mktemp("adapterlib")
    git(repo, "init", "-q", "-b", "main")
    shas = []
    for n, (code, message) in enumerate(HISTORY):
        (repo / "adapterlib").mkdir(exist_ok=True)
        (repo / "adapterlib" / "__init__.py").write_text(code)
        (repo / "pyproject.toml").write_text(PYPROJECT.format(n=n))
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", message)
        shas.append(git(repo, "rev-parse", "HEAD").strip())
    return repo, shas


CHECK = textwrap.dedent(
    """
    import adapterlib, sys
    assert "{env}" in adapterlib.__file__, adapterlib.__file__
    sys.exit(0 if adapterlib.scaling(4, 8) == 0.5 else 3)
    """
)


def make_probe(repo: Path, cache: Path, work: Path, built: list):
    target = Target("adapterlib", "adapterlib", repo)

    def probe(sha: str):
        label = target.label(sha)
        spec = "" if envs.is_built(cache, "adapterlib", label) else target.spec(sha, work)
        env = envs.build(cache, "adapterlib", label, spec, "torch==2.13.0\n")
        built.append((label, env.cached))
        if env.path is None:
            return UNTESTABLE, env.error
        proc = subprocess.run(
            [sys.executable, "-c", CHECK.format(env=env.path)],
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(env.path), "PATH": "/usr/bin:/bin"},
        )
        if proc.returncode == 3:
            return BAD, "scaling(4, 8) != 0.5"
        if proc.returncode != 0:
            return UNTESTABLE, "import failed: " + proc.stderr.strip().splitlines()[-1]
        return GOOD, "scaling(4, 8) == 0.5"

    return probe


def test_planted_break_is_found_and_the_broken_commit_skipped(repo, tmp_path):
    path, shas = repo
    candidates = versions.commits(path, shas[0], shas[BAD_END])
    assert candidates == shas[: BAD_END + 1]
    cache, built = tmp_path / "cache", []
    answer = bisect(candidates, make_probe(path, cache, tmp_path, built))
    assert answer.kind == "found"
    assert answer.first_bad == shas[FIRST_BAD], versions.subject(path, answer.first_bad)
    assert answer.last_good == shas[FIRST_BAD - 1]
    skipped = [p for p in answer.probes if p.state == UNTESTABLE]
    assert [p.version for p in skipped] == [shas[UNTESTABLE_AT]]
    assert "SyntaxError" in skipped[0].reason
    # a second search over the same range reuses every environment the first one built
    again = []
    assert bisect(candidates, make_probe(path, cache, tmp_path, again)).first_bad == shas[FIRST_BAD]
    assert again and all(cached for _, cached in again)
    assert sorted(label for label, _ in again) == sorted(label for label, _ in built)


def test_refs_must_be_ordered_and_exist(repo):
    from bench.errors import BenchInputError

    path, shas = repo
    with pytest.raises(BenchInputError, match="not an ancestor"):
        versions.commits(path, shas[5], shas[1])
    with pytest.raises(BenchInputError, match="rev-parse"):
        versions.commits(path, "no-such-ref", shas[1])


def test_a_probe_imports_a_module_the_cases_do_not_before_running(repo, tmp_path):
    """adapterlib is not something every case imports (bench.runner.zygote.PRELOAD), so the probe imports it from
    its folder first: the commit with the syntax error is `import failed`, and no run is started (one would
    say `run failed`: the scenario file does not exist)."""
    from bench.bisect import criteria
    from bench.bisect.probe import run_probe

    path, shas = repo
    record = run_probe(
        Target("adapterlib", "adapterlib", path),
        shas[UNTESTABLE_AT],
        [str(tmp_path / "no-such.toml")],
        criteria.parse("verdict:fail"),
        (),
        tmp_path / "out",
        tmp_path / "cache",
        "torch==2.13.0\n",
    )
    assert record.state == UNTESTABLE and record.stage == "import failed", record
    assert "SyntaxError" in record.reason and record.run_s == 0.0, record
    assert not (tmp_path / "out" / f"adapterlib-{shas[UNTESTABLE_AT][:12]}" / "run.log").exists()


SMOKE = scenario_toml("relative-smoke", [LOAD_A], timing=FAST_TIMING)


@pytest.mark.slow
def test_cli_relative_scenario_and_out_from_outside_the_checkout(repo, tmp_path, cache_root, cli):
    """Issue 32: `peft-bench bisect smoke.toml --out out ...` typed in a folder outside the checkout. The probes
    run in the checkout, so each read another `smoke.toml` (none: `run failed`), another --out and another
    --cache, and the answer blamed the good end. Paths are now the caller's: both commits run the scenario and hold.
    Control: on the old code (given --constraints, whose relative default was refused) the first probe read
    the relative --cache from the checkout ("import failed: No module named 'adapterlib'"), and the answer
    was "the claimed good end ... does not hold", exit 1."""
    path, shas = repo
    (tmp_path / "smoke.toml").write_text(SMOKE)
    args = ["bisect", "smoke.toml", "--package", "adapterlib", "--repo", path, "--good", shas[0]]
    same = cli(*args, "--bad", shas[0], cwd=tmp_path)  # the default --constraints is the checkout's, found
    assert same.returncode == 2 and "--good and --bad are the same" in same.stderr, same.stderr
    args += [
        "--bad",
        shas[1],
        "--out",
        "out",
        "--cache",
        "envs",
        "--constraints",
        REPO / "constraints/ci.txt",
    ]
    proc = cli(*args, env={"PEFT_BENCH_CACHE": str(cache_root)}, cwd=tmp_path)
    data = json.loads((tmp_path / "out" / "bisect.json").read_text())
    probes = data["probes"].values()
    assert [(p["stage"], p["state"]) for p in probes] == [("ran", "good")] * 2, proc.stdout + proc.stderr
    assert data["answer"]["kind"] == "no_bad" and proc.returncode == 1, proc.stdout
    assert (tmp_path / "envs").is_dir()  # the --cache the caller named, not one under the checkout
    assert not (REPO / "out").exists() and not (REPO / "envs").exists()
    missing = cli(*args[:1], "no-such.toml", *args[2:], cwd=tmp_path)  # an input error, before any probe
    assert missing.returncode == 2 and "no such scenario file" in missing.stderr
