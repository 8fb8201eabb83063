"""Determinism: the same scenario run twice gives the same verdicts and the same deterministic figures.

Deterministic figures are everything but time and memory: recompile, frame-compile and graph-break counts
(with their reasons), parameter, buffer and adapter bytes, output differences to the reference, adapter
effects, step statuses and outcomes. One run is in this process, the other in a fresh worker process as
`peft-bench run` makes it, so a figure that depends on the process (addresses, hash seeds, warm caches)
shows up as a difference. The control: another adapter seed changes the figures, and the comparison sees it.
"""

from __future__ import annotations

import os

import pytest

from bench.results.records import CaseResult
from bench.runner.launch import RunOptions, run_one
from bench.scenario import load_scenario
from bench.spec.cases import expand
from bench.worker.execute import run_case
from tests.conftest import SCENARIOS

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

FAST_TIMING = "[timing]\nwarmup = 1\nmin_rounds = 2\nmin_time_s = 0.0\n\n[adapters.first]"


def deterministic(result: CaseResult) -> dict:
    fp = result.footprint
    return {
        "verdict": result.verdict,
        "reason": result.reason,
        "total_recompiles": result.total_recompiles,
        "total_graph_breaks": result.total_graph_breaks,
        "footprint": None
        if fp is None
        else (
            fp.param_bytes,
            fp.buffer_bytes,
            fp.memory_footprint_bytes,
            fp.quant_state_bytes,
            fp.adapter_bytes,
        ),
        "steps": [
            {
                "step": (s.index, s.op, s.status, s.strict, s.error),
                "compile": None
                if s.compile is None
                else (
                    s.compile.recompiles,
                    s.compile.frame_compiles,
                    s.compile.graph_breaks,
                    s.compile.unique_graphs,
                    s.compile.recompile_reasons,
                    s.compile.graph_break_reasons,
                ),
                "output": None
                if s.output is None
                else (
                    s.output.max_abs_diff,
                    s.output.max_rel_diff,
                    s.output.matches,
                    s.output.reference_state,
                ),
                "contrast": None
                if s.contrast is None
                else (s.contrast.max_abs_diff, s.contrast.margin, s.contrast.distinguishable),
                "outcomes": [(o.expectation, o.expected, o.actual, o.status) for o in s.outcomes],
                "adapter_bytes": s.adapter_bytes,
                "timing_n": None if s.timing is None else s.timing.n,  # fixed by the policy (min_time_s = 0)
            }
            for s in result.steps
        ],
    }


def _scenario(tmp_path, seed: int, compile_label: str = "aot_eager"):
    text = (SCENARIOS / "recompile_control.toml").read_text()
    assert "[adapters.first]" in text and "seed = 2" in text and 'compile = ["aot_eager"]' in text
    text = text.replace("[adapters.first]", FAST_TIMING, 1).replace("seed = 2", f"seed = {seed}", 1)
    text = text.replace('compile = ["aot_eager"]', 'compile = ["none", "aot_eager"]')
    path = tmp_path / f"control-{seed}.toml"
    path.write_text(text)
    return next(c for c in expand(load_scenario(path)) if c.compile.label == compile_label)


def _in_worker_process(case, tmp_path, cache_root) -> CaseResult:
    """The case in its own worker process, the way `peft-bench run` starts one (forked from the preloaded
    worker: another interpreter than this one, with its own hash seed and addresses, no warm caches)."""
    result = run_one(case, RunOptions(out_dir=tmp_path, cache_root=cache_root))
    assert result.worker.pid != os.getpid() and result.worker.returncode == 0, result.worker
    return result


def test_same_scenario_twice_same_figures(tmp_path, cache_root):
    case = _scenario(tmp_path, seed=2)
    here = run_case(case, cache_root)
    there = _in_worker_process(case, tmp_path, cache_root)
    assert here.verdict == "pass", here.reason
    a, b = deterministic(here), deterministic(there)
    assert a == b
    # The figures compared are real ones, not empty: a recompile with its guard, adapter bytes, output diffs.
    assert here.total_recompiles >= 1
    assert any(s["compile"] and s["compile"][4] for s in a["steps"])
    assert all(s["adapter_bytes"] for s in a["steps"] if s["step"][1] == "load_adapter")
    assert any(s["output"] and s["output"][0] is not None for s in a["steps"])

    # The control: another seed for the second adapter moves its effect on the output, and the comparison
    # sees it. (Eager, to save a compile: the effect is measured on eager references either way.)
    same = deterministic(run_case(_scenario(tmp_path, seed=2, compile_label="none"), cache_root))
    other = deterministic(run_case(_scenario(tmp_path, seed=7, compile_label="none"), cache_root))
    assert same["steps"][3]["contrast"][0] == a["steps"][3]["contrast"][0]
    assert other["steps"][3]["contrast"][0] != a["steps"][3]["contrast"][0]
    assert other["footprint"] == a["footprint"]  # same shapes: the bytes are still equal
