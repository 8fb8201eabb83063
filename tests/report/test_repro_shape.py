"""The reproduction script of a case with a forward on its own input shape: the step draws its inputs as the
harness does, the check's reference reads the same inputs, and the steps after it are back on the workload's."""

from __future__ import annotations

import pytest

from bench.report.repro import write_repros
from bench.scenario import load_scenario
from bench.spec.cases import expand
from bench.worker.execute import run_case
from tests.catalogue import one_case_results
from tests.report.test_report import _claim_failed, _run_preloaded
from tests.scenarios import EAGER, FAST_TIMING, LOAD_A, scenario_toml

# The module's fixture runs a real case (10-30 s where no other test built the models first): `nox -s slow`.
pytestmark = pytest.mark.slow

CASE_ID = "shaped-repro[fp32-none]"
# Step 2 declares that its output must NOT match the reference: the run fails there on purpose, and the script
# reproduces that only if its own step-2 output equals a reference computed on the same (3 x 24) inputs.
STEPS = [
    LOAD_A,
    {"op": "forward", "batch_size": 3, "seq_len": 24, "expect": {"matches_reference": False}},
    "forward",
]


@pytest.fixture(scope="module")
def shaped_run(cache_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("shaped-repro")
    path = out / "shaped_repro.toml"
    path.write_text(scenario_toml("shaped-repro", STEPS, matrix=EAGER, timing=FAST_TIMING))
    case = expand(load_scenario(path))[0]
    return out, one_case_results(case, run_case(case, cache_root, work_dir=out / "work"))


def test_the_shaped_step_is_replayed_on_its_shape(shaped_run):
    out, results = shaped_run
    case = results.cases[0]
    assert case.verdict == "fail" and case.reason.startswith("step 2 (forward): matches_reference"), (
        case.reason
    )
    rp = write_repros(results, out)[CASE_ID]
    text = (out / rp.path).read_text()
    assert "ids = torch.randint(3, vocab, (3, 24), generator=gen)" in text
    proc = _run_preloaded(out / rp.path, out)
    assert proc.returncode == 1, proc.stdout
    assert "REPRODUCED: step 2 (forward): the output matches a freshly loaded reference" in proc.stdout


def test_the_steps_after_it_run_on_the_workload_inputs(shaped_run, tmp_path):
    """A claimed failure at step 3: the script restores the workload's inputs after step 2, and step 3's
    output matches its reference (not reproduced)."""
    _, results = shaped_run
    claimed = _claim_failed(results, 3, "matches_reference")
    rp = write_repros(claimed, tmp_path)[CASE_ID]
    text = (tmp_path / rp.path).read_text()
    restore = text.index("INPUTS = workload_inputs")
    assert text.index("# step 2: forward") < restore < text.index("# step 3: forward")
    proc = _run_preloaded(tmp_path / rp.path, tmp_path)
    assert proc.returncode == 0 and "NOT REPRODUCED" in proc.stdout, proc.stdout
