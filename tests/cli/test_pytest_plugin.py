"""The pytest plugin (entry point `peft_bench`): scenario files as test items, through pytester.

Collection tests are `--collect-only` (no worker runs). One test runs real cases, each in its own worker
process, and checks pytest's outcomes, the failure messages and the results files.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy  # noqa: F401 - see below
import pytest

from bench.cli.pytest_plugin import VERDICT_OUTCOMES, is_scenario_file, outcome_for
from bench.results.records import VERDICTS
from bench.results.store import load
from tests.conftest import FAST_TIMING, LOAD_A, ONE_ADAPTER_SEED_0, scenario_toml

pytest_plugins = ["pytester"]
# numpy is imported above, before any in-process pytester run: such a run restores sys.modules as it found them,
# so a numpy first imported inside one (loading a results file reads its columnar copy) was dropped, and the
# next import failed with "cannot load module more than once per process" when this file ran in one process.

ADAPTER = {"a": {"rank": 4, "alpha": 8, "seed": 1}}
# Three cases, one worker each: pass, fail and xfail (xpass takes the fail path: see the outcome table test).
# Eager, one timed round. `hotswap_path` only selects the known_failure here (no step hotswaps).
NEVER_RAISES = {"expectation": "raises", "when": {"hotswap_path": ["peft"]}, "reason": "forward never raises"}
VERDICTS_TOML = scenario_toml(
    "verdicts",
    [LOAD_A, {"op": "forward", "expect": {"raises": "ValueError"}, "known_failure": NEVER_RAISES}],
    scenario={"tags": ["plugin-tag"]},
    matrix={"compile": ["none"], "hotswap_path": ["transformers", "peft"]},
    timing=FAST_TIMING,
    adapters=ADAPTER,
)

HOLDS_TOML = scenario_toml("holds", [LOAD_A, "forward"], timing=FAST_TIMING, adapters=ADAPTER)

MATRIX_TOML = scenario_toml(
    "matrix",
    [LOAD_A, "forward"],
    scenario={"tags": ["gate"]},
    matrix={"precision": ["fp32", "bf16"], "compile": ["none", "aot_eager"]},
    adapters=ONE_ADAPTER_SEED_0,
)


@pytest.fixture
def scenario_dir(pytester):
    folder = pytester.mkdir("scen")
    (folder / "verdicts.toml").write_text(textwrap.dedent(VERDICTS_TOML))
    (folder / "holds.toml").write_text(textwrap.dedent(HOLDS_TOML))
    (folder / "matrix.toml").write_text(textwrap.dedent(MATRIX_TOML))
    # A TOML file that is not a scenario: left alone, not an error.
    (folder / "other.toml").write_text('[tool.something]\nkey = "value"\n')
    return folder


def _collected(result) -> list[str]:
    return sorted(line.split("::", 1)[1] for line in result.outlines if "::" in line)


def test_entry_point_is_installed():
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    assert eps.get("peft_bench") == "bench.cli.pytest_plugin"


def test_every_verdict_has_a_pytest_outcome():
    assert set(VERDICT_OUTCOMES) == set(VERDICTS)
    assert outcome_for("pass", "") == ("pass", "")
    assert outcome_for("fail", "step 2 (forward): raises: x") == ("fail", "step 2 (forward): raises: x")
    assert outcome_for("skip", "nf4 needs bitsandbytes") == ("skip", "nf4 needs bitsandbytes")
    assert outcome_for("xfail", "known") == ("xfail", "known")
    # Like strict xfail: a known failure that held fails, so the marker goes when upstream fixes the bug.
    assert outcome_for("xpass", "step 5 (load_adapter): held") == (
        "fail",
        "XPASS: step 5 (load_adapter): held",
    )
    assert outcome_for("error", "worker killed by SIGKILL") == ("fail", "ERROR: worker killed by SIGKILL")


def test_scenario_files_are_recognised_by_their_table(tmp_path):
    yes, no, txt = tmp_path / "s.toml", tmp_path / "pyproject.toml", tmp_path / "s.txt"
    yes.write_text('# comment\n[scenario]  # the table\nname = "x"\n')
    no.write_text("[project]\nname = 'scenario'\n[tool.scenario]\n")
    txt.write_text("[scenario]\n")
    assert is_scenario_file(yes)
    assert not is_scenario_file(no) and not is_scenario_file(txt)


def test_collects_one_item_per_case_named_by_id(pytester, scenario_dir):
    result = pytester.runpytest("scen", "--collect-only", "-q")
    assert result.ret == 0, result.stdout.str()
    assert _collected(result) == sorted(
        [
            "holds[fp32-none]",
            "matrix[bf16-aot_eager]",
            "matrix[bf16-none]",
            "matrix[fp32-aot_eager]",
            "matrix[fp32-none]",
            "verdicts[fp32-none-peft]",
            "verdicts[fp32-none-transformers]",
        ]
    )
    assert not (pytester.path / "reports").exists()  # collecting writes nothing


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("matrix and bf16", ["matrix[bf16-aot_eager]", "matrix[bf16-none]"]),
        ("aot_eager", ["matrix[bf16-aot_eager]", "matrix[fp32-aot_eager]"]),
        ("verdicts and peft", ["verdicts[fp32-none-peft]"]),
        ("plugin-tag and not peft", ["verdicts[fp32-none-transformers]"]),
        ("gate and fp32 and none", ["matrix[fp32-none]"]),
    ],
)
def test_k_selects_by_scenario_precision_compile_path_and_tag(pytester, scenario_dir, expression, expected):
    result = pytester.runpytest("scen", "--collect-only", "-q", "-k", expression)
    assert _collected(result) == expected


def test_testpaths_run_collects_no_scenario(pytester, scenario_dir):
    """The project's own `pytest` (testpaths) must not run scenarios; naming the folder does."""
    pytester.makeini("[pytest]\ntestpaths = scen\n")
    bare = pytester.runpytest("--collect-only", "-q")
    assert _collected(bare) == []
    assert bare.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    named = pytester.runpytest("scen", "--collect-only", "-q")  # the control: same files, named
    assert len(_collected(named)) == 7


@pytest.mark.slow
def test_pytest_tests_leaves_the_planted_fixture_scenarios_out_and_naming_one_collects_it():
    """`pytest tests` names the folder, so without tests/fixtures/conftest.py the plugin would collect the
    planted failures as cases of our own suite (found on a GPU host, where the suite was run that way)."""
    fixtures = Path(__file__).parents[1] / "fixtures"
    planted = sorted(p.name for p in (fixtures / "scenarios").glob("*.toml"))
    assert len(planted) >= 4

    def collect(*args: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
            cwd=fixtures.parent.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return [line for line in done.stdout.splitlines() if ".toml::" in line]

    assert collect("tests/fixtures") == []
    # The control: the same file, named, is collected (the ignore only stops the folder's recursion).
    assert collect("tests/fixtures/scenarios/timeout.toml") == [
        "tests/fixtures/scenarios/timeout.toml::timeout[fp32-none]"
    ]


def test_plugin_can_be_disabled(pytester, scenario_dir):
    result = pytester.runpytest("scen", "--collect-only", "-q", "-p", "no:peft_bench")
    assert _collected(result) == []


def test_invalid_scenario_is_a_collection_error_with_our_message(pytester):
    folder = pytester.mkdir("bad")
    (folder / "bad.toml").write_text(textwrap.dedent(MATRIX_TOML).replace('op = "forward"', 'op = "fwd"'))
    result = pytester.runpytest("bad", "--collect-only")
    assert result.ret == pytest.ExitCode.INTERRUPTED  # pytest stops on collection errors
    out = result.stdout.str()
    assert "bad.toml" in out and "step 2" in out and "unknown op 'fwd'" in out
    assert "Traceback" not in out and "loader.py" not in out


def test_duplicate_scenario_names_are_a_usage_error(pytester, scenario_dir):
    (scenario_dir / "copy.toml").write_text(textwrap.dedent(MATRIX_TOML))
    result = pytester.runpytest("scen", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "scenario names must be unique" in result.stderr.str()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--peft-bench-out", "RUN"], "holds the results of another run"),
        (["--peft-bench-out", "A_FILE"], "is not a folder"),
        (["--peft-bench-timeout", "0"], "--peft-bench-timeout: expected seconds greater than 0"),
        (["--peft-bench-timeout", "inf"], "--peft-bench-timeout: expected seconds"),
        (["--peft-bench-timeout", "nan"], "--peft-bench-timeout: expected seconds"),
    ],
)
def test_options_that_would_lose_or_misfile_results_are_usage_errors(pytester, scenario_dir, args, message):
    """An existing run was replaced by the session's (105 cases became 1), two xdist workers wrote one
    results.json (a passed case recorded not_run), a timeout of 0 or inf meant none, and an --out that is a
    file was an internal error. Each is a usage error before any case runs now. Control: a new folder and a
    finite timeout collect (and test_cases_run_as_tests runs them)."""
    run = pytester.mkdir("run")
    (run / "results.json").write_text("{}")
    (pytester.path / "a-file").write_text("x")
    where = {"RUN": str(run), "A_FILE": str(pytester.path / "a-file")}
    args = [where.get(a, a) for a in args]
    result = pytester.runpytest_subprocess("scen", "--collect-only", "-q", *args)
    assert result.ret != 0 and message in result.stderr.str() + result.stdout.str()
    assert (run / "results.json").read_text() == "{}"
    fine = ["--peft-bench-out", str(pytester.path / "new"), "--peft-bench-timeout", "30"]
    assert pytester.runpytest_subprocess("scen", "--collect-only", "-q", *fine).ret == 0


def test_under_xdist_each_case_fails_with_the_reason_and_nothing_is_written(pytester, scenario_dir):
    """Two xdist workers wrote one results.json: a passed case was recorded not_run."""
    out = pytester.path / "out"
    result = pytester.runpytest_subprocess(
        "scen/holds.toml", "-p", "xdist", "-n", "2", "--peft-bench-out", str(out)
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED and "INTERNALERROR" not in result.stdout.str()
    assert "leave out -n (pytest-xdist)" in result.stdout.str() and not out.exists()


@pytest.mark.slow
def test_cases_run_as_tests(pytester, scenario_dir, cache_root):
    out = pytester.path / "out"
    # A subprocess: the session imports torch (environment block), and pytester's in-process runs drop the
    # modules a run imported, which torch and numpy do not survive.
    result = pytester.runpytest_subprocess(
        "scen",
        "-k",
        "not matrix",
        "--peft-bench-out",
        str(out),
        "--peft-bench-cache",
        str(cache_root),
        "-rfx",
    )
    result.assert_outcomes(passed=1, failed=1, xfailed=1, deselected=4)
    text = result.stdout.str()
    # A failed expectation fails with the case's one-line reason as the message.
    assert "step 2 (forward): raises: expected ValueError, got no exception" in text
    # Where to look goes beside the message, in a report section.
    assert f"log: {out}/cases/verdicts_fp32-none-transformers.log" in text
    result.stdout.fnmatch_lines(["XFAIL*verdicts*fp32-none-peft*step 2 (forward): raises*"])
    assert f"peft-bench: results in {out}/results.json" in text
    # Results as `peft-bench run` writes them, for the selected cases only, each from its own process.
    results = load(out)
    verdicts = {c.case_id: c.verdict for c in results.cases}
    assert verdicts == {
        "verdicts[fp32-none-transformers]": "fail",
        "verdicts[fp32-none-peft]": "xfail",
        "holds[fp32-none]": "pass",
    }
    assert results.scenario_set == ("holds", "verdicts")
    assert results.command[0] == "pytest" and "--peft-bench-out" in results.command
    assert all(c.worker.pid != os.getpid() and c.worker.returncode == 0 for c in results.cases)
    assert (out / "summary.md").is_file() and (out / "results.csv").is_file()
    assert json.loads((out / "results.json").read_text())["environment"]["libraries"]["peft"]
    # The default start, as `peft-bench run`'s: forked from the preloaded worker where os.fork exists.
    assert {c.worker.start_method for c in results.cases} == {"fork"}


@pytest.mark.slow
def test_worker_option_spawns_a_fresh_python_per_case(pytester, scenario_dir, cache_root):
    out = pytester.path / "out"
    result = pytester.runpytest_subprocess(
        "scen", "-k", "holds", "--peft-bench-out", str(out), "--peft-bench-cache", str(cache_root),
        "--peft-bench-worker", "spawn",
    )  # fmt: skip
    result.assert_outcomes(passed=1, deselected=6)
    (case,) = load(out).cases
    assert case.worker.start_method == "spawn" and case.worker.returncode == 0


def test_worker_option_refuses_an_unknown_method(pytester, scenario_dir):
    result = pytester.runpytest_subprocess("scen", "--collect-only", "--peft-bench-worker", "thread")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "invalid choice: 'thread'" in result.stderr.str()


def test_an_interrupted_session_names_the_case_that_was_running(tmp_path):
    """Ctrl-C while a case's worker ran recorded it "interrupted before this case ran", as the cases after it;
    `peft-bench run` says "while this case ran" in the same place. The session state is built as the plugin
    builds it (its pytest config is not read here), its first case running and the second not yet started."""
    from types import SimpleNamespace

    from bench.cli.pytest_plugin import _RunState
    from bench.results.environment import collect
    from bench.runner.launch import RunOptions
    from bench.scenario import load_scenario
    from bench.spec.cases import expand

    path = tmp_path / "two.toml"
    path.write_text(
        scenario_toml(
            "two", [LOAD_A, "forward"], matrix={"compile": ["none", "aot_eager"]}, timing=FAST_TIMING
        )
    )
    state = _RunState(SimpleNamespace())
    state.cases = expand(load_scenario(path))
    state._opts, state._env = RunOptions(out_dir=tmp_path / "out", cache_root=tmp_path / "c"), collect()
    state._running = state.cases[0].id
    first, second = state._results(interrupted=True).cases
    assert first.reason == "interrupted while this case ran (its worker was killed)"
    assert second.reason == "interrupted before this case ran"
    # Control: a session that ended without an interrupt says neither.
    assert {c.reason for c in state._results().cases} == {"not run in this pytest session"}


@pytest.mark.slow
def test_an_unverified_pass_is_said_in_the_session_and_its_junit(pytester, cache_root, tmp_path):
    """A real lora_bias adapter: the math oracle cannot read it, so the case is an unverified pass. pytest
    showed a plain PASSED and its --junitxml a bare testcase. Control: a plain LoRA case in the same session
    carries neither the warning nor the property. The adapter is made in a subprocess: pytester restores
    sys.modules after the test, and a torch, peft or transformers first imported here would be dropped and
    imported again by the next test in this process (torch refuses its operators registered twice)."""
    make = f"""
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
from bench.engine.sources.models import resolve_model
location = resolve_model("builtin:tiny-llama", __import__("pathlib").Path({str(cache_root)!r})).location
torch.manual_seed(3)
model = get_peft_model(
    AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32),
    LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_bias=True),
)
with torch.no_grad():
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.normal_(0, 0.05)
model.save_pretrained({str(tmp_path / "lora_bias")!r})
"""
    made = subprocess.run([sys.executable, "-c", make], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    scen = pytester.path / "scen"
    scen.mkdir()
    adapters = {
        "biased": {"a": {"path": str(tmp_path / "lora_bias")}},
        "plain": {"a": {"rank": 4, "seed": 1}},
    }
    for name, adapter in adapters.items():
        (scen / f"{name}.toml").write_text(
            scenario_toml(
                name, [LOAD_A, "forward"], matrix={"compile": ["none"]}, timing=FAST_TIMING, adapters=adapter
            )
        )
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(
        "scen",
        "--peft-bench-out",
        str(pytester.path / "out"),
        "--peft-bench-cache",
        str(cache_root),
        f"--junitxml={junit}",
    )
    result.assert_outcomes(passed=2, warnings=1)
    text = result.stdout.str()
    assert (
        "PeftBenchUnverified: biased[fp32-none]: unverified pass: step 1 (load_adapter): math oracle" in text
    )
    assert "plain[fp32-none]: unverified" not in text
    import xml.etree.ElementTree as ET

    cases = {tc.get("name"): tc for tc in ET.parse(junit).getroot().iter("testcase")}
    (biased,) = [tc for name, tc in cases.items() if "biased" in name]
    (plain,) = [tc for name, tc in cases.items() if "plain" in name]
    assert [p.get("name") for p in biased.iter("property")] == ["unverified"]
    assert list(plain.iter("property")) == []
