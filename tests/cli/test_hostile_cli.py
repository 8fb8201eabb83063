"""Hostile command-line input outside results files (issue 15): thresholds, output and cache paths, huge or
empty selections, scenario paths that are not regular files, resuming a run of other versions.

Each gets exit 2 with one `peft-bench: error:` line naming what is wrong, before any case runs (nothing here
starts a worker: a test that ran one would take seconds, and these take milliseconds).
"""

from __future__ import annotations

import json
import os
import socket
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.cli.main import main
from bench.errors import BenchInputError
from bench.results.environment import collect
from bench.results.records import CaseResult, Results
from bench.spec.codec import to_dict
from tests.conftest import MINIMAL, REPO

FIXTURES = REPO / "tests" / "fixtures" / "results"
NOISE_A = FIXTURES / "noise-a" / "results.json"


def _error(capsys) -> str:
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("peft-bench: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "running" not in out  # no case started
    return lines[0]


def _scenario(tmp_path: Path, text: str = MINIMAL, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# ---------------------------------------------------------------------------------------------------------
# Thresholds: NaN compares false with everything, so a NaN threshold passed any regression.


@pytest.mark.parametrize("flag", ["--latency-rel", "--memory-rel", "--alpha"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "1e400"])
def test_non_finite_or_negative_threshold_flags(flag, value, capsys):
    assert main(["gate", str(NOISE_A), "--baseline", str(NOISE_A), f"{flag}={value}"]) == 2
    assert flag in _error(capsys)
    assert main(["compare", str(NOISE_A), str(NOISE_A), f"{flag}={value}"]) == 2
    assert flag in _error(capsys)


@pytest.mark.parametrize("metric", ["latency_ms", "rss_peak_bytes", "compiled_over_eager"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-0.5", "1e400"])
def test_non_finite_or_negative_thresholds_in_gate_toml(metric, value, tmp_path, capsys):
    (tmp_path / "results.json").write_text(NOISE_A.read_text())
    (tmp_path / "gate.toml").write_text(f"[thresholds.{metric}]\nrel = {value}\n")
    assert main(["gate", str(NOISE_A), "--baseline", str(tmp_path / "results.json")]) == 2
    line = _error(capsys)
    assert "gate.toml" in line and f"thresholds.{metric}.rel" in line


def test_control_a_nan_threshold_would_pass_a_10x_slowdown(capsys):
    """What the checks above prevent: with NaN as rel, the policy finds no regression in a 10x slowdown."""
    from bench.judge.compare import compare
    from bench.judge.gate import decide
    from bench.judge.thresholds import DEFAULT_POLICY, LATENCY_METRICS
    from bench.results.measures import TimingStats
    from bench.results.store import load

    base = load(NOISE_A)

    def slow(step):
        if step.timing is None:
            return step
        return replace(step, timing=TimingStats.from_samples([x * 10 for x in step.timing.samples_ms]))

    current = replace(base, cases=tuple(replace(c, steps=tuple(map(slow, c.steps))) for c in base.cases))
    honest = decide(compare(base, current, DEFAULT_POLICY), "update")
    assert not honest.passed
    nan_policy = {
        m: replace(p, rel=float("nan")) if m in LATENCY_METRICS else p for m, p in DEFAULT_POLICY.items()
    }
    assert decide(compare(base, current, nan_policy), "update").passed


# ---------------------------------------------------------------------------------------------------------
# Output and cache paths


def _out_cases(tmp_path: Path) -> dict[str, tuple[str, str]]:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    locked = tmp_path / "locked"
    (locked / ".peft-bench.runner.lock").mkdir(parents=True)
    return {
        "a file": (str(a_file), "not a folder"),
        "under a file": (str(a_file / "sub"), "it is a file"),
        "a folder no one can write (/proc/self)": ("/proc/self", "cannot write there"),
        "a missing folder under one": ("/proc/self/peft-bench-out", "cannot write there"),
        "lock file a folder": (
            str(locked),
            "lock file .peft-bench.runner.lock is not a regular file: a folder",
        ),
        "empty": ("", "empty path"),
        "blank": ("  ", "empty path"),
    }


@pytest.mark.parametrize(
    "name",
    [
        "a file",
        "under a file",
        "a folder no one can write (/proc/self)",
        "a missing folder under one",
        "lock file a folder",
        "empty",
        "blank",
    ],
)
def test_run_out_refused_before_any_work(name, tmp_path, capsys):
    out, message = _out_cases(tmp_path)[name]
    scenario = _scenario(tmp_path)
    assert main(["run", str(scenario), "--out", out, "--cache", str(tmp_path / "cache")]) == 2
    assert message in _error(capsys)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("from_env", [False, True])
def test_a_cache_that_is_a_file_is_refused_naming_where_it_came_from(from_env, tmp_path, capsys, monkeypatch):
    """The refusal said "give a folder for the output" of a cache given with --cache or $PEFT_BENCH_CACHE."""
    (a_file := tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("PEFT_BENCH_CACHE", str(a_file if from_env else tmp_path / "cache"))
    cache = [] if from_env else ["--cache", str(a_file)]
    assert main(["run", str(_scenario(tmp_path)), "--out", str(tmp_path / "out"), *cache]) == 2
    line = _error(capsys)
    assert ("$PEFT_BENCH_CACHE: " if from_env else "--cache: ") in line and "is not a folder" in line
    assert "for the output" not in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["a file", "under a file", "a missing folder under one", "empty"])
def test_report_and_merge_out_refused(name, tmp_path, capsys):
    out, message = _out_cases(tmp_path)[name]
    assert main(["report", str(NOISE_A), "--out", out]) == 2
    assert message in _error(capsys)
    assert main(["merge", out, str(NOISE_A)]) == 2
    assert message in _error(capsys)


@pytest.mark.parametrize("name", ["results.json", "results.csv", "summary.md", "table.json"])
def test_report_table_never_replaces_a_runs_own_files(name, tmp_path, capsys):
    """--table RUN/results.json replaced the run's results with the table: the run could not be read again.
    Control: another name in the same folder is written."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(Path(NOISE_A).parent if Path(NOISE_A).is_file() else NOISE_A, run)
    before = (run / "results.json").read_bytes()
    code = main(["report", str(run), "--out", str(tmp_path / "r"), "--table", str(run / name)])
    if name == "table.json":
        assert code == 0 and json.loads((run / name).read_text())  # the tidy rows
    else:
        assert code == 2 and "would replace a run's own" in _error(capsys)
    assert (run / "results.json").read_bytes() == before


def test_report_print_without_markdown_is_refused_before_writing(tmp_path, capsys):
    """--print with --format html only wrote report.html, then refused. Control: with md it prints the report."""
    out = tmp_path / "r"
    assert main(["report", str(NOISE_A), "--out", str(out), "--format", "html", "--print"]) == 2
    assert "add --format md" in _error(capsys) and not out.exists()
    assert main(["report", str(NOISE_A), "--out", str(out), "--format", "md", "--print"]) == 0
    assert capsys.readouterr().out.count("# peft-bench report") == 1 and (out / "report.md").is_file()


@pytest.mark.parametrize("table", ["missing/t.csv", "a-file/t.csv", "folder", ""])
def test_report_table_path_refused(table, tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "folder").mkdir()
    path = str(tmp_path / table) if table else ""
    assert main(["report", str(NOISE_A), "--out", str(tmp_path / "r"), "--table", path]) == 2
    line = _error(capsys)
    assert (
        ("does not exist" in line)
        or ("is not a folder" in line)
        or ("is a folder" in line)
        or ("empty path" in line)
    )
    assert not (tmp_path / "r").exists()  # no report written either


@pytest.mark.parametrize("cache", ["~peft-bench-no-such-user/cache", "~no_user_x/c", "{file}", "{file}/sub"])
def test_cache_paths_refused(cache, tmp_path, capsys, monkeypatch):
    (tmp_path / "f").write_text("x")
    cache = cache.format(file=tmp_path / "f")
    scenario = _scenario(tmp_path)
    assert main(["run", str(scenario), "--out", str(tmp_path / "o"), "--cache", cache]) == 2
    assert cache in _error(capsys)
    monkeypatch.setenv("PEFT_BENCH_CACHE", cache)
    assert main(["run", str(scenario), "--out", str(tmp_path / "o")]) == 2
    assert cache in _error(capsys)
    assert not (tmp_path / "o" / "results.json").exists()


# ---------------------------------------------------------------------------------------------------------
# Selections


def _matrix_scenario(tmp_path: Path, n_compile: int, n_precision: int) -> Path:
    compiles = ", ".join(['"aot_eager"', '"eager"', '"none"'][:n_compile])
    precisions = ", ".join(['"fp32"', '"bf16"', '"fp16"'][:n_precision])
    text = MINIMAL.replace('compile = ["aot_eager"]', f"compile = [{compiles}]\nprecision = [{precisions}]")
    return _scenario(tmp_path, text)


@settings(max_examples=20, deadline=None)
@given(n_compile=st.integers(2, 3), n_precision=st.integers(1, 3), slack=st.integers(1, 3))
def test_selection_above_max_cases_refused(n_compile, n_precision, slack, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("sel")
    scenario = _matrix_scenario(tmp_path, n_compile, n_precision)
    n = n_compile * n_precision
    for command in ("list", "run"):
        args = [command, str(scenario), "--max-cases", str(max(1, n - slack))]
        if command == "run":
            args += ["--out", str(tmp_path / "o")]
        assert main(args) == 2  # n >= 2 > the limit: refused, nothing run
        assert not (tmp_path / "o" / "results.json").exists()
    assert main(["list", str(scenario), "--max-cases", str(n)]) == 0  # control: at the limit, listed


def test_max_cases_counts_without_expanding(tmp_path, capsys, monkeypatch):
    import bench.spec.cases

    scenario = _matrix_scenario(tmp_path, 3, 3)
    monkeypatch.setattr(bench.spec.cases, "expand", lambda s: pytest.fail("expanded before the size check"))
    assert main(["list", str(scenario), "--max-cases", "8"]) == 2
    line = _error(capsys)
    assert "expands to 9 cases, more than --max-cases 8" in line and "minimal" in line


@pytest.mark.parametrize("shard", ["2/2", "3/3", "5/7", "100/100"])
def test_shard_selecting_no_case(shard, tmp_path, capsys):
    scenario = _scenario(tmp_path)  # 1 case
    assert main(["list", str(scenario), "--shard", shard]) == 2
    assert "no case selected" in _error(capsys)
    assert main(["run", str(scenario), "--shard", shard, "--out", str(tmp_path / "o")]) == 2
    assert "no case selected" in _error(capsys)
    assert main(["list", str(scenario), "--shard", "1/2"]) == 0  # control: shard 1 holds the case


# ---------------------------------------------------------------------------------------------------------
# Scenario paths that are not regular files


def _special(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / "s.toml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind in ("/dev/zero", "/dev/null", "/dev/urandom"):
        path.symlink_to(kind)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    elif kind == "dangling link":
        path.symlink_to(tmp_path / "gone.toml")
    elif kind == "too big":
        path.write_text(MINIMAL + "#" * 2**20)
    return path


@pytest.mark.parametrize(
    "kind,message",
    [
        ("fifo", "is a FIFO"),
        ("/dev/zero", "is a device"),
        ("/dev/null", "is a device"),
        ("/dev/urandom", "is a device"),
        ("socket", "is a socket"),
        ("dangling link", "link to a missing file"),
        ("too big", "more than the 1048576"),
    ],
)
@pytest.mark.parametrize("given_as", ["file", "folder"])
def test_scenario_path_not_a_regular_file(kind, message, given_as, tmp_path, capsys):
    path = _special(kind, tmp_path)
    arg = path if given_as == "file" else tmp_path
    assert main(["list", str(arg)]) == 2  # returns at once: a FIFO is never opened
    line = _error(capsys)
    assert str(path) in line and message in line


# ---------------------------------------------------------------------------------------------------------
# Resume from another suite or library version


def _finished_run(tmp_path: Path, **changes) -> Path:
    scenario = _scenario(tmp_path)
    env = collect()
    env = replace(env, libraries={**env.libraries, **changes.pop("libraries", {})}, **changes.pop("env", {}))
    case = CaseResult(
        case_id="minimal[fp32-aot_eager]",
        scenario="minimal",
        scenario_file=str(scenario),
        params={"precision": "fp32", "compile": "aot_eager", "hotswap_path": "transformers"},
        verdict="pass",
        reason="",
    )
    results = Results(
        schema_version=1,
        suite_version=changes.pop("suite_version", "0.1.0"),
        created_at="2026-12-03T00:00:00+00:00",
        environment=env,
        scenario_set=("minimal",),
        cases=(case,),
    )
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(to_dict(results)))
    return out


@pytest.mark.parametrize(
    "changes,differs",
    [
        ({"suite_version": "0.0.9"}, "peft-bench 0.0.9 there"),
        ({"suite_version": "1.0.0"}, "peft-bench 1.0.0 there"),
        ({"libraries": {"torch": "2.0.0"}}, "torch 2.0.0 there"),
        ({"libraries": {"peft": "0.1.0"}}, "peft 0.1.0 there"),
        ({"libraries": {"transformers": None}}, "transformers not installed there"),
        # Another kind of machine: the kept cases' figures were measured there (a node of another kind).
        ({"env": {"cpu": "Intel(R) Xeon(R) Platinum 8480+"}}, "CPU Intel(R) Xeon(R) Platinum 8480+ there"),
        ({"env": {"cpu_count": 112}}, "112 cores there"),
    ],
)
def test_resume_of_another_version(changes, differs, tmp_path, capsys):
    out = _finished_run(tmp_path, **changes)
    before = (out / "results.json").read_text()
    assert main(["run", "--resume", str(out), "--cache", str(tmp_path / "c")]) == 2
    line = _error(capsys)
    assert differs in line and "--resume-any-version" in line
    assert (out / "results.json").read_text() == before
    # The user's choice: keep them, said per case.
    assert main(["run", "--resume", str(out), "--resume-any-version", "--cache", str(tmp_path / "c")]) == 0
    out_text = capsys.readouterr().out
    assert "minimal[fp32-aot_eager]: kept figures from another version (" in out_text and differs in out_text


def test_control_resume_of_the_same_version_keeps_quietly(tmp_path, capsys):
    out = _finished_run(tmp_path)
    assert main(["run", "--resume", str(out), "--cache", str(tmp_path / "c")]) == 0
    assert "another version" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------
# gate and bisect outputs and ends (issue 32): refused before any work, no traceback


@pytest.mark.parametrize("kind", ["a folder", "under a file", "in a missing folder"])
def test_gate_summary_path_refused_before_the_verdict(kind, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    summary = {"a folder": tmp_path, "under a file": tmp_path / "f" / "s.md"}.get(
        kind, tmp_path / "missing" / "s.md"
    )
    assert main(["gate", str(NOISE_A), "--baseline", str(NOISE_A), "--summary", str(summary)]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "--summary" in err and str(summary) in err, err
    assert "gate: PASS" not in out and "gate: FAIL" not in out  # refused before the verdict


def test_gate_summary_control_a_file_is_appended(tmp_path, capsys):
    summary = tmp_path / "s.md"
    assert main(["gate", str(NOISE_A), "--baseline", str(NOISE_A), "--summary", str(summary)]) == 0
    assert summary.read_text().startswith("## peft-bench gate: passed")


BISECT = ["bisect", "scenarios/hotswap_alpha.toml", "--package", "transformers"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--good", "5.20.0", "--bad", "5.20.0"], "--good and --bad are the same"),
        (["--good", "5.20.0", "--bad", " 5.20.0 "], "--good and --bad are the same"),
        (["--good", "5.20.0", "--bad", "5.24.0", "--out", "{file}"], "not a folder"),
        (["--good", "5.20.0", "--bad", "5.24.0", "--out", "{file}/sub"], "it is a file"),
    ],
)
def test_bisect_ends_and_out_refused_before_any_work(args, message, tmp_path, capsys, monkeypatch):
    import bench.cli.commands.bisect as command

    monkeypatch.setattr(command, "search", lambda *a, **k: pytest.fail("bisect started its search"))
    monkeypatch.chdir(REPO)
    (tmp_path / "f").write_text("x")
    args = [a.format(file=tmp_path / "f") for a in args]
    assert main([*BISECT, *args]) == 2
    line = _error(capsys)
    assert message in line, line


@pytest.mark.parametrize(
    "args",
    [
        ["gate", str(NOISE_A), "--latency-rel"],
        ["run", "--no-such-option"],
        ["merge"],
        ["no-such-command"],
    ],
)
def test_usage_errors_say_peft_bench_once(args, capsys):
    """`peft-bench: error: peft-bench gate: ...` read twice (issue 32): the prefix is printed once."""
    assert main(args) == 2
    line = _error(capsys)
    assert line.count("peft-bench") == 1, line


# ---------------------------------------------------------------------------------------------------------
# A lock file or results file that is not a regular file (issue 32): said what it is, never opened


def _not_regular(kind: str, path: Path) -> None:
    """A FIFO, a socket, or a link to a device at `path`."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    else:
        path.symlink_to(kind)


@pytest.mark.parametrize(
    "kind,what",
    [
        ("fifo", "not a regular file: a FIFO"),
        ("/dev/zero", "is a symbolic link (to '/dev/zero')"),
        ("socket", "not a regular file: a socket"),
    ],
)
def test_lock_file_not_a_regular_file(kind, what, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    _not_regular(kind, out / ".peft-bench.runner.lock")
    scenario = _scenario(tmp_path)
    assert main(["run", str(scenario), "--out", str(out), "--cache", str(tmp_path / "c")]) == 2
    line = _error(capsys)
    assert what in line and "a folder?" not in line, line
    assert main(["merge", str(out), str(NOISE_A)]) == 2
    line = _error(capsys)
    assert what in line, line


@pytest.mark.parametrize(
    "kind,what",
    [("fifo", "a FIFO"), ("/dev/zero", "a device"), ("/dev/null", "a device"), ("socket", "a socket")],
)
@pytest.mark.parametrize("given_as", ["file", "folder"])
def test_results_file_not_a_regular_file(kind, what, given_as, tmp_path, capsys):
    results = tmp_path / "results.json"
    _not_regular(kind, results)
    arg = results if given_as == "file" else tmp_path
    for args in (["gate", str(arg), "--baseline", str(NOISE_A)], ["compare", str(NOISE_A), str(arg)]):
        assert main(args) == 2  # at once: a FIFO is never opened, /dev/zero never read
        line = _error(capsys)
        assert str(results) in line and f"not a regular file: {what}" in line, line
        assert "no such results file" not in line


# ---------------------------------------------------------------------------------------------------------
# Resume with the run's own options: a resume without --require-oracles passed the steps the run's first case
# had failed under it.


def test_resumed_options_take_the_runs_own_and_refuse_a_change():
    from bench.results.records import RunSettings
    from bench.runner.resume import given_options, resumed_options

    run = RunSettings(require_oracles=True, timeout_s=60.0, worker="fork")
    asked = RunSettings(worker="fork")
    settings, jobs, notes = resumed_options(run, 2, asked, 1, given_options(["run", "--resume", "OUT"]))
    assert (settings, jobs) == (run, 2)
    assert notes == ["--require-oracles", "--timeout 60", "--jobs 2"]
    for argv, flag in (
        (["--jobs", "1"], "--jobs 2"),
        (["--jobs=1"], "--jobs 2"),
        (["--time", "5"], "--timeout 60"),  # argparse's prefix of --timeout
    ):
        asked_here = RunSettings(worker="fork", timeout_s=5.0) if "--time" in argv else asked
        with pytest.raises(BenchInputError) as info:
            resumed_options(run, 2, asked_here, 1, given_options(argv))
        assert f"the run was started with {flag}" in str(info.value)
    # Controls: the same values given again are fine; a file from before the options were recorded resumes
    # with the command's own.
    assert resumed_options(run, 2, run, 2, given_options(["--jobs", "2", "--require-oracles"]))[2] == []
    assert resumed_options(None, 1, asked, 1, set()) == (asked, 1, [])


@pytest.mark.slow
def test_a_resume_runs_the_missing_case_under_the_runs_options(tmp_path, capsys):
    from bench.results.records import RunSettings
    from bench.results.store import load
    from bench.runner.processes import default_method

    out = _finished_run(tmp_path)
    data = json.loads((out / "results.json").read_text())
    data["cases"][0].update(verdict="not_run", reason="interrupted before this case ran")
    data["options"] = to_dict(RunSettings(require_oracles=True, worker=default_method()))
    data["suite_version"] = __import__("bench").__version__
    (out / "results.json").write_text(json.dumps(data))
    before = (out / "results.json").read_text()
    cache = ["--cache", str(tmp_path / "c")]
    assert main(["run", "--resume", str(out), "--compile-cache", "cold", *cache]) == 2
    assert "started with --compile-cache warm, this command gives --compile-cache cold" in _error(capsys)
    assert (out / "results.json").read_text() == before  # refused before any case ran
    assert main(["run", "--resume", str(out), *cache]) == 0
    assert "resuming with the run's own --require-oracles" in capsys.readouterr().out
    resumed = load(out)
    assert resumed.options.require_oracles and resumed.cases[0].verdict == "pass"
    assert resumed.created_at == "2026-12-03T00:00:00+00:00"  # the run's start, not the resume's
