"""CI surfaces (bench.cli.ci and the CLI): JUnit XML, the GitHub step summary from `run` and `report`, `--tag`,
`--device` into the case spec, `--shard auto` from a GitHub Actions matrix or a Slurm job array."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import pytest

from bench.cli.ci import junit_xml, scheduler_from_env, select_tags, shard_from_env
from bench.cli.main import main
from bench.errors import BenchInputError
from bench.results.store import load
from tests.conftest import LOAD_A, REPO, scenario_toml

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

FAILING = REPO / "tests" / "fixtures" / "results" / "failing"


@pytest.mark.parametrize(
    ("env", "shard"),
    [
        ({"PEFT_BENCH_JOB_INDEX": "0", "PEFT_BENCH_JOB_TOTAL": "4"}, "1/4"),
        ({"PEFT_BENCH_JOB_INDEX": "3", "PEFT_BENCH_JOB_TOTAL": "4"}, "4/4"),
        ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "3"}, "1/3"),
        ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"}, "3/3"),
        # A rerun of task 2 of --array=0-3 only (sbatch --array=2 has min 2, count 1): merge's printed command
        # sets N and the first task id, so it is still shard 3 of 4.
        (
            {
                "SLURM_ARRAY_TASK_ID": "2",
                "SLURM_ARRAY_TASK_MIN": "2",
                "SLURM_ARRAY_TASK_COUNT": "1",
                "PEFT_BENCH_SHARD_COUNT": "4",
                "PEFT_BENCH_SHARD_BASE": "0",
            },
            "3/4",
        ),
        # A Kubernetes Indexed Job: the 0-based completion index; the completions count from the pod's env.
        ({"JOB_COMPLETION_INDEX": "0", "PEFT_BENCH_SHARD_COUNT": "3"}, "1/3"),
        ({"JOB_COMPLETION_INDEX": "2", "PEFT_BENCH_SHARD_COUNT": "3"}, "3/3"),
    ],
)
def test_shard_from_env(env, shard):
    assert shard_from_env(env) == shard


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"PEFT_BENCH_JOB_INDEX": "0"},
        {"PEFT_BENCH_JOB_INDEX": "x", "PEFT_BENCH_JOB_TOTAL": "2"},
        {"PEFT_BENCH_JOB_INDEX": "2", "PEFT_BENCH_JOB_TOTAL": "2"},  # 0-based: 2 is past the end
        {"SLURM_ARRAY_TASK_ID": "1"},
        {
            "JOB_COMPLETION_INDEX": "0"
        },  # Kubernetes does not export completions: PEFT_BENCH_SHARD_COUNT is needed
        {"JOB_COMPLETION_INDEX": "3", "PEFT_BENCH_SHARD_COUNT": "3"},  # 0-based: 3 is past the end
        {"JOB_COMPLETION_INDEX": "x", "PEFT_BENCH_SHARD_COUNT": "3"},
    ],
)
def test_shard_from_env_refuses_what_it_cannot_read(env):
    with pytest.raises(BenchInputError, match="--shard auto"):
        shard_from_env(env)


def test_kubernetes_without_the_count_names_the_variable_to_set():
    with pytest.raises(BenchInputError, match="PEFT_BENCH_SHARD_COUNT"):
        shard_from_env({"JOB_COMPLETION_INDEX": "0"})


def test_scheduler_from_env():
    assert scheduler_from_env({}) == {}
    slurm = {
        "SLURM_JOB_ID": "101",
        "SLURM_ARRAY_JOB_ID": "100",
        "SLURM_ARRAY_TASK_ID": "1",
        "SLURM_ARRAY_TASK_MIN": "0",
        "SLURM_ARRAY_TASK_COUNT": "2",
        "SLURM_SUBMIT_DIR": "/work",
        "SLURMD_NODENAME": "gpu7",
        "PEFT_BENCH_SLURM_SCRIPT": "/work/run_array.sbatch",
    }
    assert scheduler_from_env(slurm) == {
        "kind": "slurm",
        "array_job_id": "100",
        "array_task_id": "1",
        "job_id": "100_1",
        "shard_base": "0",
        "shard_count": "2",
        "script": "/work/run_array.sbatch",
        "submit_dir": "/work",
        "node": "gpu7",
    }
    assert scheduler_from_env({"SLURM_JOB_ID": "7"}) == {"kind": "slurm", "job_id": "7"}  # not an array
    k8s = {"JOB_COMPLETION_INDEX": "2", "PEFT_BENCH_SHARD_COUNT": "4", "HOSTNAME": "bench-2-x7k"}
    assert scheduler_from_env(k8s) == {
        "kind": "kubernetes",
        "completion_index": "2",
        "shard_count": "4",
        "job_id": "bench-2-x7k",
    }
    gh = {"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "9", "GITHUB_JOB": "shard", "PEFT_BENCH_JOB_INDEX": "1"}
    assert scheduler_from_env(gh)["job_id"] == "9/shard[1]"


def test_junit_xml_one_testcase_per_case_with_reasons():
    results = load(FAILING)
    suite = ET.fromstring(junit_xml(results))
    cases = suite.findall("testcase")
    assert [tc.get("name") for tc in cases] == [c.case_id for c in results.cases]
    for tc, c in zip(cases, results.cases, strict=True):
        failure, skipped = tc.find("failure"), tc.find("skipped")
        if c.verdict in ("fail", "error", "xpass"):
            assert failure is not None and failure.get("message") == c.reason
        elif c.verdict in ("skip", "xfail", "not_run"):
            assert skipped is not None and failure is None
        else:
            assert failure is None and skipped is None
    assert int(suite.get("failures")) == sum(c.verdict in ("fail", "error", "xpass") for c in results.cases)
    assert int(suite.get("failures")) > 0  # the fixture run has failing cases: the check has something to see


def test_junit_xml_holds_any_reason_and_tells_unverified_and_known_failures_apart():
    """A reason quoting terminal colour codes (ESC, BEL) made the file unparseable, and a CI's JUnit reader
    lost every case; an unverified pass was a bare <testcase>; an xfail's marker reason was not in it.
    Control: a plain pass is a bare <testcase> still."""
    import dataclasses

    results = load(REPO / "reports" / "baseline")
    plain, *rest = results.cases
    colours = dataclasses.replace(
        rest[1], verdict="error", reason="could not load /x/\x1b[31mred\x07\x01 bell"
    )
    step = dataclasses.replace(plain.steps[1], unverified="math oracle: lora_bias adapters")
    unverified = dataclasses.replace(plain, case_id="u[fp32]", steps=(plain.steps[0], step, *plain.steps[2:]))
    xfail = next(c for c in results.cases if c.verdict == "xfail")
    suite = ET.fromstring(junit_xml(dataclasses.replace(results, cases=(plain, colours, unverified, xfail))))
    by_name = {tc.get("name"): tc for tc in suite.findall("testcase")}
    failure = by_name[colours.case_id].find("failure")
    assert failure.get("message") == "could not load /x/\\x1b[31mred\\x07\\x01 bell"
    props = by_name["u[fp32]"].find("properties")
    assert props.find("property").get("name") == "unverified"
    assert "lora_bias" in by_name["u[fp32]"].find("system-out").text
    skipped = by_name[xfail.case_id].find("skipped").get("message")
    assert skipped.startswith("xfail: ") and "; known failure: " in skipped and "[fingerprint: " in skipped
    assert list(by_name[plain.case_id]) == []


def _scen(tmp_path, name, tags):
    path = tmp_path / f"{name}.toml"
    path.write_text(scenario_toml(name, [LOAD_A], scenario={"tags": list(tags)}))
    return path


def test_run_refuses_a_selection_the_tags_empty(tmp_path, capsys):
    _scen(tmp_path, "one", ["slow"])
    assert main(["run", str(tmp_path), "--skip-tag", "slow", "--out", str(tmp_path / "out")]) == 2
    assert "no scenario is left by these tags" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything started
    # list alike (it printed nothing and exited 0), naming only the tags given
    assert main(["list", str(tmp_path), "--tag", "nosuchtag"]) == 2
    assert "error: --tag nosuchtag: no scenario is left by these tags" in capsys.readouterr().err
    assert main(["list", str(tmp_path), "--tag", "slow"]) == 0  # control: a tag that selects


def test_list_by_tag_and_auto_shard(tmp_path, capsys, monkeypatch):
    _scen(tmp_path, "one", ["gate", "hotswap"])
    _scen(tmp_path, "two", ["gate"])
    _scen(tmp_path, "three", [])
    assert main(["list", str(tmp_path), "--tag", "gate"]) == 0
    assert {line.split("[")[0] for line in capsys.readouterr().out.split()} == {"one", "two"}
    assert main(["list", str(tmp_path), "--tag", "gate", "--tag", "hotswap"]) == 0
    assert {line.split("[")[0] for line in capsys.readouterr().out.split()} == {"one"}
    assert select_tags([], ["x"]) == []
    assert main(["list", str(tmp_path), "--skip-tag", "hotswap"]) == 0
    assert {line.split("[")[0] for line in capsys.readouterr().out.split()} == {"two", "three"}
    assert main(["list", str(tmp_path), "--tag", "gate", "--skip-tag", "hotswap", "--skip-tag", "x"]) == 0
    assert {line.split("[")[0] for line in capsys.readouterr().out.split()} == {"two"}
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    assert main(["list", str(tmp_path), "--shard", "auto"]) == 0
    assert capsys.readouterr().out.split() == ["three[fp32-none]"]  # sorted ids: one, three, two
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    assert main(["list", str(tmp_path), "--shard", "auto"]) == 2


def test_report_appends_to_the_step_summary(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(FAILING, run)
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert main(["report", str(run), "--format", "md"]) == 0
    text = summary.read_text()
    assert text.startswith("earlier step\n") and load(run).cases[0].case_id in text


@pytest.mark.parametrize(
    "where, junit, message",
    [
        ("folder", True, "--junit-xml: is a folder: give a file name"),
        ("under_file", True, "--junit-xml: its folder"),
        ("folder", False, "$GITHUB_STEP_SUMMARY: is a folder: give a file name"),
        ("under_file", False, "$GITHUB_STEP_SUMMARY: its folder"),
    ],
)
def test_ci_outputs_that_cannot_be_written_are_refused_before_any_case(
    tmp_path, monkeypatch, capsys, where, junit, message
):
    """A JUnit file or step summary that could not be written was a traceback after every case had run, and
    the run's exit code was lost: now exit 2 before anything starts, naming the option. Control: a writable
    file runs (test_run_writes_junit_and_step_summary)."""
    (tmp_path / "afile").write_text("")
    path = tmp_path / "afile" / "x.xml" if where == "under_file" else tmp_path
    out = tmp_path / "out"
    args = ["run", str(_scen(tmp_path, "ci", ["x"])), "--out", str(out)]
    if junit:
        args += ["--junit-xml", str(path)]
    else:
        monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(path))
    assert main(args) == 2
    assert message in capsys.readouterr().err and not out.exists()
    if not junit:  # the report appends to the step summary too, and checks it before loading
        assert main(["report", str(FAILING), "--out", str(tmp_path / "rep")]) == 2
        assert message in capsys.readouterr().err


def test_device_cuda_without_cuda_is_an_error_not_a_cpu_run(tmp_path, cache_root, monkeypatch, capsys):
    """--device cuda on a machine where torch sees no CUDA ran every case on the CPU without a word, and the
    run's timings went into the calibration filed under cuda. Where CUDA is there, the case runs on it."""
    import torch

    monkeypatch.setenv("PEFT_BENCH_CACHE", str(cache_root))
    out = tmp_path / "out"
    code = main(["run", str(_scen(tmp_path, "dev", ["x"])), "--out", str(out), "--device", "cuda"])
    (case,) = load(out).cases
    if torch.cuda.is_available():
        assert code == 0 and case.device == "cuda"
    else:
        assert code == 1 and case.verdict == "error" and case.device == "cpu"
        assert "--device cuda: torch sees no CUDA device here" in case.reason
        assert "torch sees no CUDA device" in capsys.readouterr().out


def test_device_goes_into_the_case_spec(tmp_path, cache_root):
    from bench.runner.launch import RunOptions, case_spec
    from bench.scenario import load_scenarios
    from bench.spec.cases import expand_all

    (case,) = expand_all(load_scenarios([_scen(tmp_path, "d", [])]))
    assert (
        case_spec(case, RunOptions(out_dir=tmp_path, cache_root=cache_root, device="cpu"))["device"] == "cpu"
    )
    assert case_spec(case, RunOptions(out_dir=tmp_path, cache_root=cache_root))["device"] is None


def test_run_writes_junit_and_step_summary(tmp_path, cache_root, monkeypatch, capsys):
    import json

    monkeypatch.setenv("PEFT_BENCH_CACHE", str(cache_root))
    summary = tmp_path / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    scen, out, xml = _scen(tmp_path, "ci", ["x"]), tmp_path / "out", tmp_path / "junit.xml"
    assert main(["run", str(scen), "--out", str(out), "--junit-xml", str(xml), "--device", "cpu"]) == 0
    (tc,) = ET.parse(xml).getroot().findall("testcase")
    assert tc.get("name") == "ci[fp32-none]" and tc.find("failure") is None
    assert "ci[fp32-none]" in summary.read_text()
    assert json.loads((out / "cases" / "ci_fp32-none.case.json").read_text())["device"] == "cpu"
    (case,) = load(out).cases
    assert case.worker.start_method in ("fork", "spawn")


def test_the_step_summary_of_a_large_run_stays_under_githubs_limit(tmp_path):
    """A run appended its whole summary.md, about 500 bytes a case: over GitHub's 1 MiB a step past 2,000
    cases. Control: a summary that fits goes whole."""
    from bench.cli.ci import STEP_SUMMARY_BYTES, bounded_summary

    rows = "".join(f"| `case-{i}[fp32-none]` | pass | 0 | 1.0s | |\n" for i in range(30_000))
    text = "# peft-bench summary\n\n30000 pass.\n\n" + rows
    cut = bounded_summary(text, tmp_path)
    assert len(cut.encode()) < STEP_SUMMARY_BYTES + 300 and cut.startswith(
        "# peft-bench summary\n\n30000 pass."
    )
    assert f"the whole summary is {tmp_path / 'summary.md'}" in cut
    assert cut.split("\n\n... cut")[0].endswith("| |")  # cut at a line's end, never inside a row
    small = "# peft-bench summary\n\n1 pass.\n"
    assert bounded_summary(small, tmp_path) == small
