"""The CUDA graph counter (bench.engine.probes.cudagraphs) and the `cuda_graph_recordings` expectation.

No CUDA here: the probe's tree walk and its window run against a fake torch.cuda and a fake cudagraph tree
(nodes with `children`, as torch._inductor.cudagraph_trees builds them); on this CPU the real sources say
why nothing can be counted. On a lent GPU, benchmarks/gpu_check.sh runs tests/engine/test_cuda_real.py (a real
re-record counted) and examples/gpu/cudagraphs_hotswap.toml, which carries the expectation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from bench.engine.probes.cudagraphs import (
    CudaGraphCounts,
    count_cuda_graphs,
    tree_nodes,
    why_unavailable,
    with_cuda_graphs,
)
from bench.errors import ScenarioError
from bench.results.measures import CompileStats
from bench.scenario import load_scenario
from bench.spec.counts import CountBound
from bench.spec.schema import Expectations, Step
from bench.spec.state import AdapterState
from bench.worker.decide import decide
from bench.worker.facts import Evidence, StepRun
from tests.scenarios import scenario_toml


@dataclass
class FakeNode:
    children: dict = field(default_factory=dict)


@dataclass
class FakeManager:
    roots: dict = field(default_factory=dict)

    def record(self, function_id: str, parent: FakeNode | None = None) -> FakeNode:
        node = FakeNode()
        (self.roots if parent is None else parent.children).setdefault(function_id, []).append(node)
        return node


class FakeCuda:
    def __init__(self, available=True, error: Exception | None = None):
        self.available, self.error = available, error

    def is_available(self):
        if self.error is not None:
            raise self.error
        return self.available


def _sources(manager: FakeManager, skips: list[int], cuda=None):
    return (cuda or FakeCuda(), lambda index: tree_nodes(manager), lambda: skips[0])


def test_the_tree_walk_counts_every_recording():
    manager = FakeManager()
    assert tree_nodes(None) == 0 and tree_nodes(FakeManager(roots=None)) == 0
    root = manager.record("fwd")
    child = manager.record("fwd", root)
    manager.record("fwd", child)
    manager.record("fwd", root)  # a sibling: the same function recorded again under the same parent
    manager.record("other")
    assert tree_nodes(manager) == 5


def test_a_swap_that_makes_the_tree_record_again_is_counted():
    manager, skips = FakeManager(), [0]
    manager.record("fwd")  # the recording made by the first compiled calls, before the step
    with count_cuda_graphs("cuda:0", "reduce-overhead", _sources(manager, skips)) as window:
        manager.record("fwd")  # a rebound Parameter: the captured input moved, the tree records again
        skips[0] += 1
    assert window.counts == CudaGraphCounts(recordings=1, skips=1)
    # The negative control: a swap into the captured tensors replays the graph, nothing is recorded.
    with count_cuda_graphs("cuda:0", "reduce-overhead", _sources(manager, skips)) as window:
        pass
    assert window.counts == CudaGraphCounts(recordings=0, skips=0)


def test_counts_are_taken_when_the_step_raises():
    manager, skips = FakeManager(), [0]
    with pytest.raises(RuntimeError):
        with count_cuda_graphs("cuda", "max-autotune", _sources(manager, skips)) as window:
            manager.record("fwd")
            raise RuntimeError("planted")
    assert window.counts == CudaGraphCounts(recordings=1, skips=0)


@pytest.mark.parametrize(
    ("device", "cuda", "reason"),
    [
        ("cpu", FakeCuda(), "CUDA graphs need a CUDA device; this case runs on cpu"),
        ("cuda", FakeCuda(available=False), "torch.cuda.is_available() is False"),
        ("cuda", FakeCuda(error=RuntimeError("driver too old")), "raised RuntimeError: driver too old"),
    ],
)
def test_where_no_graph_can_be_recorded_the_counts_are_none_with_the_reason(device, cuda, reason):
    assert reason in why_unavailable(device, cuda)
    with count_cuda_graphs(device, "reduce-overhead", _sources(FakeManager(), [0], cuda)) as window:
        pass
    assert window.counts.recordings is None and window.counts.skips is None
    assert reason in window.counts.unavailable
    assert why_unavailable("cuda:1", FakeCuda()) is None  # the control: a CUDA device that answers


def test_this_cpu_machine_says_why_with_the_real_sources():
    with count_cuda_graphs("cpu", "reduce-overhead") as window:
        pass
    assert window.counts == CudaGraphCounts(
        None, None, "CUDA graphs need a CUDA device; this case runs on cpu"
    )


@pytest.mark.parametrize("mode", [None, "default", "max-autotune-no-cudagraphs"])
def test_a_mode_without_cuda_graphs_has_nothing_to_count(mode):
    manager = FakeManager()
    with count_cuda_graphs("cuda", mode, _sources(manager, [0])) as window:
        manager.record("fwd")
    assert window.counts is None
    stats = CompileStats(recompiles=0, frame_compiles=1, graph_breaks=0, unique_graphs=1)
    assert with_cuda_graphs(stats, None) is stats


# ----- the expectation, decided


def _step() -> Step:
    bound = CountBound("==", 0)
    return Step(index=5, op="forward", expect=Expectations(recompiles=bound, cuda_graph_recordings=bound))


def _decide(counts: CudaGraphCounts):
    comp = with_cuda_graphs(
        CompileStats(recompiles=0, frame_compiles=0, graph_breaks=0, unique_graphs=0), counts
    )
    run = StepRun(compiled=True, called_model=True)
    return decide({}, _step(), run, None, comp, True, AdapterState(), Evidence())


def _statuses(record) -> dict[str, str]:
    return {o.expectation: o.status for o in record.outcomes}


def test_a_re_record_fails_the_step_and_none_passes():
    failed = _decide(CudaGraphCounts(recordings=2, skips=0))
    assert _statuses(failed)["cuda_graph_recordings"] == "fail" and failed.status == "fail"
    assert "2 CUDA graph recording(s)" in next(o.message for o in failed.outcomes if o.status == "fail")
    passed = _decide(CudaGraphCounts(recordings=0, skips=0))  # the control
    assert _statuses(passed)["cuda_graph_recordings"] == "pass" and passed.unverified is None


def test_a_count_that_could_not_be_taken_is_never_a_silent_pass():
    record = _decide(CudaGraphCounts(None, None, "CUDA graphs need a CUDA device; this case runs on cpu"))
    assert "cuda_graph_recordings" not in _statuses(record)
    assert record.unverified == "cuda_graph_recordings: CUDA graphs need a CUDA device; this case runs on cpu"
    assert any(n.startswith("cuda_graph_recordings not evaluated") for n in record.notes)


def _graphs_scenario(compile_value) -> str:
    return scenario_toml(
        "graphs",
        [
            {"op": "load_adapter", "adapter": "a", "name": "a"},
            {"op": "compile"},
            {"op": "forward", "expect": {"cuda_graph_recordings": "== 0"}},
        ],
        matrix={"precision": ["fp32"], "compile": [compile_value]},
    )


def test_the_expectation_needs_a_compile_that_records_cuda_graphs(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(_graphs_scenario("aot_eager"))
    with pytest.raises(ScenarioError, match="cuda_graph_recordings needs a compile with CUDA graphs"):
        load_scenario(bad)
    good = tmp_path / "good.toml"
    good.write_text(_graphs_scenario({"backend": "inductor", "mode": "reduce-overhead"}))
    assert load_scenario(good).steps[2].expect.cuda_graph_recordings == CountBound("==", 0)
