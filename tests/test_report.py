"""Reports from a real results file, and reproduction scripts run as a user would run them.

tests/fixtures/results/failing is a real run (`python -m bench run`) of two planted scenarios
(tests/fixtures/scenarios: a recompile expected not to happen, a 1 s timeout) and scenarios/hotswap_alpha.toml
(whose transformers case is the silent wrong hotswap).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace

import pytest

from bench.cli import main
from bench.records import Results, to_dict
from bench.report import html, markdown, plots
from bench.report.repro import repro_file_name, write_repros
from bench.results import load
from tests.conftest import REPO

FAILING = REPO / "tests" / "fixtures" / "results" / "failing"
ALPHA_TF = "hotswap-alpha[fp32-aot_eager-transformers]"
ALPHA_PEFT = "hotswap-alpha[fp32-aot_eager-peft]"
ZERO = "recompile-zero[fp32-aot_eager]"
TIMEOUT = "timeout[fp32-none]"


@pytest.fixture(scope="module")
def failing() -> Results:
    return load(FAILING)


@pytest.fixture(scope="module")
def repros(failing, tmp_path_factory):
    out = tmp_path_factory.mktemp("repro-out")
    return out, write_repros(failing, out, roots=(REPO,))


def _run_standalone(script, cwd):
    """Run a script with peft-bench unimportable (`import bench` raises), from a folder outside the repo."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    code = "import runpy, sys; sys.modules['bench'] = None; runpy.run_path(sys.argv[1], run_name='__main__')"
    return subprocess.run(
        [sys.executable, "-c", code, str(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_markdown_report(failing, repros):
    _, rp = repros
    md = markdown.render(failing, rp)
    env = failing.environment
    assert md.startswith("# peft-bench report")
    assert f"torch {env.libraries['torch']}" in md and env.git_commit in md and "Device: cpu" in md
    assert "| recompile-zero | fail |" in md and "| hotswap-alpha (transformers) | xfail |" in md
    assert "| timeout | | error |" in md.replace("|  |", "| |")
    # A failing case says why in one line: which expectation, which guard; and links its script.
    line = next(x for x in md.splitlines() if x.startswith(f"- `{ZERO}` **fail**"))
    assert "recompiles: 1 recompile(s), expected == 0" in line and "lora_A" in line
    assert f"[`repro/{repro_file_name(ZERO)}`](repro/{repro_file_name(ZERO)})" in line
    tf = next(x for x in md.splitlines() if x.startswith(f"- `{ALPHA_TF}` **xfail**"))
    assert "matches_reference" in tf and "max abs diff 0.3" in tf
    assert f"`{TIMEOUT}` **error**: timed out after 1 s" in md
    # Every figure states n and spread: the latency table has both columns.
    assert "| case | step | precision | compile | n | median ms | IQR ms |" in md
    assert re.search(
        r"\| `hotswap-alpha\[fp32-aot_eager-peft\]` \| 4 \(forward\) \| fp32 \| aot_eager \| \d+ \|", md
    )
    for heading in ("Switch cost", "Memory per step", "Memory growth", "Recompiles per step"):
        assert f"## {heading}" in md
    assert "| `hotswap-alpha[fp32-aot_eager-peft]` | 5 | hotswap (peft) |" in md


def test_html_report_is_self_contained(failing, repros, tmp_path):
    out, rp = repros
    page = html.render(failing, rp, out_dir=out)
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page
    images = re.findall(r'<img alt="[^"]*" src="([^"]+)"', page)
    assert len(images) >= 4 and all(src.startswith("data:image/png;base64,") for src in images)
    assert "<script" not in page and "<link" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from elsewhere
    assert 'class="v-fail"' in page and "lora_A" in page
    assert f'href="repro/{repro_file_name(ALPHA_TF)}"' in page and "def main(work):" in page  # script inline
    assert failing.environment.libraries["transformers"] in page


def test_html_report_without_matplotlib_says_why(failing, monkeypatch):
    monkeypatch.setattr(
        plots, "unavailable_reason", lambda: "figures need matplotlib, which is not installed"
    )
    page = html.render(failing)
    assert "<img" not in page and "No figures: figures need matplotlib" in page
    assert "<table>" in page  # the tables still carry every figure


def test_report_of_a_run_without_measurements(failing):
    only_error = replace(failing, cases=tuple(c for c in failing.cases if c.case_id == TIMEOUT))
    md = markdown.render(only_error)
    assert "No measured calls in this run." in md and "No hotswap steps in this run." in md
    assert "<img" not in html.render(only_error)


def test_repro_reproduces_the_silent_wrong_hotswap(repros, tmp_path):
    out, rp = repros
    r = rp[ALPHA_TF]
    assert r.path == f"repro/{repro_file_name(ALPHA_TF)}"
    script = out / r.path
    text = script.read_text()
    assert not re.search(r"^\s*(import|from) bench", text, re.M)  # plain transformers / peft / torch only
    assert "load_adapter(ADAPTERS['a4'], adapter_name='default', hotswap=True)" in text
    proc = _run_standalone(script, tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert (
        "REPRODUCED: step 5 (load_adapter): the output differs from a freshly loaded reference" in proc.stdout
    )
    assert "max abs diff 0.3" in proc.stdout


def test_repro_reproduces_a_recompile_with_its_guard(repros, tmp_path):
    out, rp = repros
    proc = _run_standalone(out / rp[ZERO].path, tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "REPRODUCED: step 4 (load_adapter): 1 recompiles, expected == 0" in proc.stdout
    assert "lora_A" in proc.stdout


def test_repro_of_a_case_that_did_not_fail_says_so(failing, tmp_path):
    """Negative control: the PEFT path passed; a results file that claims it failed gets a script that
    finds no failure and exits 0."""

    def _claim(o):
        return replace(o, status="xfail", held=False) if o.expectation == "matches_reference" else o

    def claim_failure(c):
        steps = tuple(
            replace(s, status="xfail", outcomes=tuple(_claim(o) for o in s.outcomes)) if s.index == 5 else s
            for s in c.steps
        )
        return replace(c, verdict="xfail", reason="planted", steps=steps)

    planted = replace(
        failing, cases=tuple(claim_failure(c) if c.case_id == ALPHA_PEFT else c for c in failing.cases)
    )
    rp = write_repros(planted, tmp_path, roots=(REPO,))
    text = (tmp_path / rp[ALPHA_PEFT].path).read_text()
    assert "peft_hotswap(model, ADAPTERS['a4'], 'default')" in text
    proc = _run_standalone(tmp_path / rp[ALPHA_PEFT].path, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NOT REPRODUCED" in proc.stdout and "max abs diff 0" in proc.stdout


def test_repro_of_an_error_and_of_a_missing_scenario(failing, repros, tmp_path):
    out, rp = repros
    assert rp[TIMEOUT].path and "every step ran" in (out / rp[TIMEOUT].path).read_text()
    assert ALPHA_PEFT not in rp  # a pass gets no script
    moved = replace(
        failing,
        cases=tuple(
            replace(c, scenario_file="gone/nowhere.toml") if c.case_id == ZERO else c for c in failing.cases
        ),
    )
    note = write_repros(moved, tmp_path, roots=(REPO,))[ZERO]
    assert note.path is None and "gone/nowhere.toml not found" in note.note


def test_report_cli(failing, tmp_path, capsys, monkeypatch):
    src = tmp_path / "run"
    src.mkdir()
    (src / "results.json").write_text(json.dumps(to_dict(failing)))
    monkeypatch.chdir(REPO)  # the run's scenario paths are relative to the repo, as they were typed
    assert main(["report", str(src), "--format", "md", "--table", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert (src / "report.md").is_file() and not (src / "report.html").exists()
    assert (src / "repro" / repro_file_name(ALPHA_TF)).is_file() and (tmp_path / "t.csv").is_file()
    assert f"wrote {src / 'report.md'}" in out
    monkeypatch.setattr("bench.tables.parquet_engine", lambda: None)
    assert main(["report", str(src), "--table", str(tmp_path / "t.parquet")]) == 2
    assert "pyarrow" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing")]) == 2
