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
from pathlib import Path

import pytest

from bench.cli.main import main
from bench.report import data, html, markdown, plots, training
from bench.report.repro import repro_file_name, write_repros
from bench.results.records import Results
from bench.results.store import load
from bench.spec.codec import to_dict
from tests.catalogue import one_case_results
from tests.conftest import REPO

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

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


def _run_preloaded(script, cwd):
    """As _run_standalone, in a process forked from this test process's preloaded worker (tests/repro_runner.py
    blocks every bench module there): the imports, most of a script's time, are paid once. stdout holds the
    script's stdout and stderr together."""
    from bench.runner.launch import shared_zygote

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    log = Path(cwd) / f"{Path(script).stem}.log"
    argv = [str(script), str(cwd)]
    handle = shared_zygote().fork(
        argv, log=log, env=env, memory_limit_bytes=None, entry="tests.repro_runner:main"
    )
    exit_ = handle.wait(300)
    if exit_ is None:
        handle.kill_group()
        handle.wait(None)
        raise AssertionError(f"{script} did not end in 300 s: {log.read_text()}")
    return subprocess.CompletedProcess(argv, exit_.returncode, log.read_text(), "")


def test_a_preloaded_run_cannot_use_the_suite(tmp_path):
    """The control for _run_preloaded: a script that imports from bench (one module the preloaded worker
    already holds, one it does not) fails there, as it would without peft-bench installed."""
    for line in ("from bench.worker.execute import run_case", "import bench.report"):
        script = tmp_path / "leans_on_bench.py"
        script.write_text(f"import torch\n{line}\nprint('imported')\n")
        proc = _run_preloaded(script, tmp_path)
        assert proc.returncode == 1 and "imported" not in proc.stdout, proc.stdout
        assert "ModuleNotFoundError" in proc.stdout or "ImportError" in proc.stdout, proc.stdout
    script.write_text("import torch, transformers, peft\nprint('plain', torch.__version__)\n")
    proc = _run_preloaded(script, tmp_path)
    assert proc.returncode == 0 and "plain" in proc.stdout, proc.stdout


def test_markdown_report(failing, repros):
    _, rp = repros
    md = markdown.render(failing, rp)
    env = failing.environment
    assert md.startswith("# peft-bench report")
    assert f"torch {env.libraries['torch']}" in md and env.git_commit in md and "Device: cpu" in md
    assert "| recompile-zero | fail |" in md and "| hotswap-alpha (transformers) | xfail |" in md
    assert "| timeout | | error |" in md.replace("|  |", "| |")
    # A failing case says why in one line: which expectation, which guard; and links its script.
    line = next(x for x in md.splitlines() if x.startswith(f"- `{ZERO}` **fail: recompiled**"))
    assert "recompiles: 1 recompile(s), expected == 0" in line and "lora_A" in line
    assert f"[`repro/{repro_file_name(ZERO)}`](repro/{repro_file_name(ZERO)})" in line
    tf = next(x for x in md.splitlines() if x.startswith(f"- `{ALPHA_TF}` **xfail: wrong output (silent)**"))
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
    proc = _run_preloaded(out / rp[ZERO].path, tmp_path)
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
    assert "peft_hotswap(model, ADAPTERS['a4'], 'default', DEVICE)" in text
    proc = _run_preloaded(tmp_path / rp[ALPHA_PEFT].path, tmp_path)
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
    monkeypatch.setattr("bench.results.frames.parquet_engine", lambda: None)
    assert main(["report", str(src), "--table", str(tmp_path / "t.parquet")]) == 2
    assert "pyarrow" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing")]) == 2


# ---------------------------------------------------------------------------------------------------------
# Training, the copy floor, and the reproduction of the newer ops.
#
# tests/fixtures/results/train is a real run (`python -m bench run scenarios/train_lora.toml
# scenarios/train_full.toml scenarios/train_lora_modules_to_save.toml scenarios/memory_growth.toml`).

TRAIN = REPO / "tests" / "fixtures" / "results" / "train"
PLANTED = REPO / "tests" / "fixtures" / "scenarios" / "train_save_planted.toml"
PLANTED_ID = "train-save-planted[fp32-none]"


@pytest.fixture(scope="module")
def trained() -> Results:
    return load(TRAIN)


def _train_step(results: Results, case_id: str):
    case = next(c for c in results.cases if c.case_id == case_id)
    return next(s for s in case.steps if s.train is not None)


def _without(results: Results, *case_ids: str) -> Results:
    return replace(results, cases=tuple(c for c in results.cases if c.case_id not in case_ids))


def _edit_train(results: Results, case_id: str, **changes) -> Results:
    def edit(c):
        if c.case_id != case_id:
            return c
        steps = tuple(replace(s, train=replace(s.train, **changes)) if s.train else s for s in c.steps)
        return replace(c, steps=steps)

    return replace(results, cases=tuple(edit(c) for c in results.cases))


def test_training_section_shows_each_train_step(trained):
    rows = training.train_rows(trained)
    assert len(rows) == 6 and {r.kind for r in rows} == {"LoRA", "full"}
    md = markdown.render(trained)
    assert "## Training" in md and "n is the number of optimizer steps timed (here 20;" in md
    for r in rows:
        t = _train_step(trained, r.case_id).train
        line = next(x for x in md.splitlines() if x.startswith(f"| `{r.case_id}` | {r.step} |"))
        pct = f"{100 * t.trainable_params / t.total_params:.3g}%"
        assert f"{t.trainable_params:,} of {t.total_params:,} ({pct})" in line, line
        assert f"| {t.step_time.n} |" in line and f"{t.loss_first:.4g} -> {t.loss_last:.4g}" in line
        assert f"| {t.rss_peak_bytes / 2**20:.1f} |" in line
    full = next(r for r in rows if r.case_id == "train-full[fp32-none]")
    assert full.full and full.trainable_params == full.total_params == full.base_params


def test_lora_savings_pair_same_base_and_precision(trained):
    savings = training.lora_savings(training.train_rows(trained))
    assert len(savings) == 4
    for v in savings:
        assert v.full.case_id == f"train-full[{v.lora.precision}-none]"
        lora, full = _train_step(trained, v.lora.case_id).train, _train_step(trained, v.full.case_id).train
        want = full.grad_bytes + full.optimizer_state_bytes - lora.grad_bytes - lora.optimizer_state_bytes
        assert v.train_state_saved_bytes == want > 0
        assert v.rss_peak_saved_bytes == full.rss_peak_bytes - lora.rss_peak_bytes
    md = markdown.render(trained)
    assert "**What LoRA saves against full fine-tuning**" in md
    # On this tiny model the saving is a few MiB of a ~400 MiB process: the report says RSS cannot show it.
    assert "Every row: saving < 5% of peak RSS" in md
    page = html.render(trained)
    assert "<h3>What LoRA saves against full fine-tuning</h3>" in page
    assert 'alt="Training. ' in page


def test_lora_savings_negative_controls(trained):
    """No baseline, a baseline of another base model, another precision: no saving, and the report says why."""
    fulls = ("train-full[fp32-none]", "train-full[bf16-none]")
    alone = _without(trained, *fulls)
    assert training.lora_savings(training.train_rows(alone)) == []
    md = markdown.render(alone)
    assert "What LoRA saves" not in md and "No full fine-tuning case in these results" in md

    other_base = _edit_train(trained, "train-full[fp32-none]", total_params=1, trainable_params=1)
    rows = training.train_rows(other_base)
    paired = {v.lora.case_id for v in training.lora_savings(rows)}
    assert paired == {"train-lora[bf16-none]", "train-lora-modules-to-save[bf16-none]"}
    note = " ".join(training.unpaired_notes(rows, training.lora_savings(rows)))
    assert "train-lora[fp32-none] step 2 (fp32, 210,240 base parameters)" in note

    bf16_only = _without(trained, "train-full[fp32-none]")
    assert all(v.lora.precision == "bf16" for v in training.lora_savings(training.train_rows(bf16_only)))

    no_rss = _edit_train(trained, "train-lora[fp32-none]", rss_peak_bytes=None)
    v = next(
        v
        for v in training.lora_savings(training.train_rows(no_rss))
        if v.lora.case_id.startswith("train-lora[")
    )
    assert v.rss_peak_saved_bytes is None and v.rss_peak_ratio is None and "not measured" in v.note

    assert "No train steps in this run." in markdown.render(load(FAILING))


def test_full_baseline_recognised_without_the_full_arg(trained):
    """Results written before the step args carried `full`: every parameter trainable is the baseline."""

    def strip(c):
        return replace(c, steps=tuple(replace(s, args={}) for s in c.steps))

    old = replace(trained, cases=tuple(strip(c) for c in trained.cases))
    assert [r.full for r in training.train_rows(old)] == [r.full for r in training.train_rows(trained)]
    assert len(training.lora_savings(training.train_rows(old))) == 4


def test_switch_table_has_the_copy_floor_and_the_ratio(failing, trained):
    rows = data.switch_rows(failing)
    for r in rows:
        step = next(s for c in failing.cases if c.case_id == r.case_id for s in c.steps if s.index == r.step)
        assert r.copy_floor_ms == step.copy_floor_ms and r.over_floor == step.op_time_ms / step.copy_floor_ms
    md = markdown.render(failing)
    assert "| adapter KiB | copy floor ms | call / floor | note |" in md
    swap = next(r for r in rows if r.case_id == ALPHA_PEFT and r.kind.startswith("hotswap"))
    line = next(x for x in md.splitlines() if x.startswith(f"| `{ALPHA_PEFT}` | {swap.step} |"))
    ratio = f"{swap.over_floor:,.0f}x" if swap.over_floor >= 1000 else f"{swap.over_floor:.3g}x"
    assert f"| {ratio} |" in line
    assert plots.switch_plot(rows) is not None

    # A repeat_load hotswap step: the median of its swaps against the floor measured for the same bytes.
    rep = next(r for r in data.switch_rows(trained) if "repeat_load" in r.kind)
    case = next(c for c in trained.cases if c.case_id == rep.case_id)
    stats = next(s.repeat for s in case.steps if s.index == rep.step)
    floor = next(s.copy_floor_ms for s in case.steps if s.adapter_bytes == stats.adapter_bytes_per_rep)
    assert rep.n == stats.count and rep.total_ms is None
    assert rep.over_floor == pytest.approx(sorted(stats.op_time_ms)[stats.count // 2] / floor)


def test_switch_table_without_a_floor_says_why(failing):
    """Negative control: a load whose copy floor and size are unknown gets no ratio, and a reason."""
    blank = replace(
        failing,
        cases=tuple(
            replace(c, steps=tuple(replace(s, copy_floor_ms=None, adapter_bytes=None) for s in c.steps))
            for c in failing.cases
        ),
    )
    rows = data.switch_rows(blank)
    assert rows and all(r.over_floor is None for r in rows)
    line = next(x for x in markdown.render(blank).splitlines() if x.startswith(f"| `{ALPHA_PEFT}` | 5 |"))
    assert "| - | - | - |" in line and "no copy floor: the adapter's size is unknown" in line


@pytest.fixture(scope="module")
def planted(cache_root, tmp_path_factory):
    """A real in-process run of the planted scenario (fails at step 9 on purpose), with its repro written."""
    from bench.scenario import load_scenario
    from bench.spec.cases import expand
    from bench.worker.execute import run_case

    out = tmp_path_factory.mktemp("planted")
    case = expand(load_scenario(PLANTED))[0]
    results = one_case_results(case, run_case(case, cache_root, work_dir=out / "work"))
    return out, results, write_repros(results, out, roots=(REPO,))


def _claim_failed(results: Results, step: int, expectation: str, **case_changes) -> Results:
    """The results as if `expectation` had failed at `step` (to check a script finds no such failure)."""

    def claim(s):
        if s.index != step:
            return replace(s, status="pass")
        outs = tuple(
            replace(o, status="fail", held=False) if o.expectation == expectation else o for o in s.outcomes
        )
        return replace(s, status="fail", outcomes=outs)

    c = results.cases[0]
    c = replace(c, verdict="fail", reason="planted", steps=tuple(claim(s) for s in c.steps), **case_changes)
    return replace(results, cases=(c,))


def test_repro_replays_train_save_load_pretrained_and_repeat_load(planted):
    out, results, rp = planted
    case = results.cases[0]
    assert case.verdict == "fail" and case.reason.startswith("step 9 (set_adapter): matches_reference")
    assert [s.status for s in case.steps] == ["pass"] * 8 + ["fail"]
    text = (out / rp[PLANTED_ID].path).read_text()
    for call in (
        "losses = train(model, steps=3, learning_rate=0.01, full=False, shape=(2, 8))",
        "model.save_pretrained(ADAPTERS['trained'])",
        "model = load_model(ADAPTERS['trained'])",
        "model.load_adapter(location, adapter_name='cycled')\n        model.delete_adapter('cycled')",
        "model.load_adapter(location, adapter_name=f'side{i}')",
        "model.load_adapter(location, adapter_name='side1', hotswap=True)",
        "names = list(model.active_adapters())",
    ):
        assert call in text, call
    # Step 9 expects the output NOT to match: the script finds that it does, which it can only if every
    # step before it (trained weights saved and reloaded, loops of loads, a hotswap) left the same state.
    proc = _run_preloaded(out / rp[PLANTED_ID].path, out)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "REPRODUCED: step 9 (set_adapter): the output matches a freshly loaded reference" in proc.stdout
    assert "active_adapters(): ['side1']" in proc.stdout and "max abs diff 0 " in proc.stdout


def test_repro_checks_the_loss(planted, tmp_path):
    """A claimed loss_decreases failure: not reproduced with the scenario's 3 steps (the loss falls);
    reproduced with 1 step, where the first loss is the last."""
    _, results, _ = planted
    claimed = _claim_failed(results, 2, "loss_decreases")
    three = write_repros(claimed, tmp_path, roots=(REPO,))[PLANTED_ID]
    text = (tmp_path / three.path).read_text()
    assert "if not losses[-1] < losses[0]:" in text
    assert (
        "'lora': build_adapter(" in text and "'other': build_adapter(" not in text
    )  # only what step 2 needs

    one_step = tmp_path / "one_step.toml"
    one_step.write_text(PLANTED.read_text().replace("steps = 3\n", "steps = 1\n"))
    short = tmp_path / "short"
    one = write_repros(_claim_failed(results, 2, "loss_decreases", scenario_file=str(one_step)), short)
    (rc3, out3), (rc1, out1) = (
        (p.returncode, p.stdout)
        for p in (
            _run_preloaded(tmp_path / three.path, tmp_path),
            _run_preloaded(short / one[PLANTED_ID].path, short),
        )
    )
    assert rc3 == 0 and "NOT REPRODUCED" in out3 and "for 3 steps: loss" in out3, out3
    assert rc1 == 1, out1
    assert "REPRODUCED: step 2 (train): the loss did not decrease" in out1


def test_repro_of_an_unknown_expectation_is_a_note(planted, tmp_path):
    _, results, _ = planted
    c = results.cases[0]
    steps = tuple(
        replace(
            s,
            outcomes=tuple(
                replace(o, expectation="made_up") if o.status == "fail" else o for o in s.outcomes
            ),
        )
        for s in c.steps
    )
    odd = replace(results, cases=(replace(c, steps=steps),))
    note = write_repros(odd, tmp_path, roots=(REPO,))[PLANTED_ID]
    assert note.path is None and "does not check 'made_up' yet" in note.note


MERGE_PLANTED = REPO / "tests" / "fixtures" / "scenarios" / "merge_planted.toml"


def test_repro_replays_the_merge_ops_in_place_compile_and_default_hotswap(cache_root, tmp_path):
    """Each new op's script() runs standalone: merge, unmerge, merge_and_unload (the suite's own functions
    carried in the script), model.compile(), load_adapter with hotswap left at its default, and the save."""
    from bench.scenario import load_scenario
    from bench.spec.cases import expand
    from bench.worker.execute import run_case

    (case,) = expand(load_scenario(MERGE_PLANTED))
    result = run_case(case, cache_root, work_dir=tmp_path / "work")
    assert result.verdict == "fail" and result.reason.startswith("step 10 (forward): matches_reference")
    # step 5's xfail: transformers 5.23 rebinds the swapped Parameters (swap_in_place, a fingerprinted marker)
    assert [s.status for s in result.steps] == ["pass"] * 4 + ["xfail"] + ["pass"] * 4 + ["fail"]
    results = one_case_results(case, result)
    rp = write_repros(results, tmp_path, roots=(REPO,))[case.id]
    text = (tmp_path / rp.path).read_text()
    for call in (
        "model.compile(backend='aot_eager', fullgraph=False, dynamic=None)",
        "model.load_adapter(ADAPTERS['second'], adapter_name='default')  # hotswap left at its default",
        "model.save_pretrained(ADAPTERS['swapped'])",
        "layer.merge()",
        "layer.unmerge()",
        "merge_and_unload(model)",
        "def merge_and_unload(model)",
    ):
        assert call in text, call
    proc = _run_preloaded(tmp_path / rp.path, tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "REPRODUCED: step 10 (forward): the output matches a freshly loaded reference" in proc.stdout


def _with_compiled_reload(results: Results) -> Results:
    """Each hotswap-alpha case plus a plain load into the compiled model (its step 2 again, after compile)."""

    def add(c):
        if not c.case_id.startswith("hotswap-alpha"):
            return c
        load = next(s for s in c.steps if s.index == 2)
        return replace(c, steps=(*c.steps, replace(load, index=7, first_call_ms=load.first_call_ms * 20)))

    return replace(results, cases=tuple(add(c) for c in results.cases))


def test_x_reload_is_against_a_reload_into_the_compiled_model(failing):
    """The fixture's plain loads ran before the compile: no x reload, and the note says why."""
    swap = next(
        r for r in data.switch_rows(failing) if r.case_id == ALPHA_PEFT and r.kind.startswith("hotswap")
    )
    assert swap.over_reload is None and "no plain load into the model the swap ran on" in swap.note
    rows = data.switch_rows(_with_compiled_reload(failing))
    reload = next(r for r in rows if r.case_id == ALPHA_PEFT and r.kind == "reload")
    swap = next(r for r in rows if r.case_id == ALPHA_PEFT and r.kind.startswith("hotswap"))
    assert reload.step == 7 and swap.over_reload == pytest.approx(swap.total_ms / reload.total_ms)


def test_a_swap_with_a_wrong_output_is_flagged_never_a_speed_up(failing):
    """transformers' alpha hotswap is fast because it is wrong: its row carries the flag and no ratio, while
    the same row of the correct peft swap gets one (the control)."""
    results = _with_compiled_reload(failing)
    rows = data.switch_rows(results)
    wrong = next(r for r in rows if r.case_id == ALPHA_TF and r.kind.startswith("hotswap"))
    right = next(r for r in rows if r.case_id == ALPHA_PEFT and r.kind.startswith("hotswap"))
    assert wrong.over_reload is None and wrong.note.startswith("WRONG OUTPUT")
    assert right.over_reload is not None and not right.note.startswith("WRONG OUTPUT")
    latency = {(r.case_id, r.step): r for r in data.latency_rows(results)}
    assert latency[(ALPHA_TF, 6)].wrong_output and not latency[(ALPHA_PEFT, 6)].wrong_output
    md = markdown.render(results)
    line = next(x for x in md.splitlines() if x.startswith(f"| `{ALPHA_TF}` | 6 (forward) |"))
    assert "| WRONG OUTPUT: did not match the reference (max abs diff 0.3) |" in line
