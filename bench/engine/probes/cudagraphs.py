"""Count CUDA graph recordings and skips during a step, for cases compiled with inductor's CUDA graphs.

With `mode="reduce-overhead"` inductor records each compiled function into a CUDA graph (cudagraph trees)
and replays it. A graph reads its inputs, parameters included, from the addresses captured at recording. A
swap that writes into those tensors keeps the graph valid. A swap that rebinds a Parameter to a new tensor
moves an input: the tree then records the function again (a re-record, peft#2611), or, past
`cudagraph_unexpected_rerecord_limit`, falls back to running it without a graph (a "skip"). Either costs
what CUDA graphs were chosen to save, without a recompile to show for it.

torch 2.13 keeps no counter of recordings: each recording adds one node to the device's tree, so the nodes
are counted before and after the step. Skips are `torch._dynamo.utils.counters["inductor"]["cudagraph_skips"]`,
diffed. Where no CUDA graph can be recorded (no CUDA device, or the case runs on the CPU) the counts are
None with the reason, never 0.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from bench.results.measures import CompileStats
from bench.spec.schema import CUDA_GRAPH_MODES


@dataclass(frozen=True)
class CudaGraphCounts:
    """CUDA graphs recorded and skipped during one step; None and `unavailable` where not measurable."""

    recordings: int | None
    skips: int | None
    unavailable: str | None = None


@dataclass
class _Window:
    counts: CudaGraphCounts | None = None


def uses_cuda_graphs(mode: str | None) -> bool:
    return mode in CUDA_GRAPH_MODES


def why_unavailable(device: str, cuda: Any) -> str | None:
    """Why no CUDA graph can be recorded here, or None when one can. `cuda` is torch.cuda (a fake in tests)."""
    if not device.startswith("cuda"):
        return f"CUDA graphs need a CUDA device; this case runs on {device}"
    try:
        available = cuda.is_available()
    except Exception as exc:  # a broken driver answers with an error, not False
        return f"torch.cuda.is_available() raised {type(exc).__name__}: {exc}"
    return None if available else "torch.cuda.is_available() is False"


def tree_nodes(manager: Any) -> int:
    """The nodes of a cudagraph tree manager's tree: one per recording. A manager not yet made counts 0."""
    if manager is None or manager.roots is None:
        return 0
    stack = [node for nodes in manager.roots.values() for node in nodes]
    count = 0
    while stack:
        node = stack.pop()
        count += 1
        stack.extend(child for children in node.children.values() for child in children)
    return count


def _device_index(device: str) -> int:
    return int(device.split(":", 1)[1]) if ":" in device else 0


def _real_sources():
    import torch
    from torch._dynamo.utils import counters
    from torch._inductor import cudagraph_trees

    def nodes(index: int) -> int:
        return tree_nodes(cudagraph_trees.get_manager(index, create_if_none_exists=False))

    return torch.cuda, nodes, lambda: counters["inductor"]["cudagraph_skips"]


@contextlib.contextmanager
def count_cuda_graphs(device: str, mode: str | None, sources=None) -> Iterator[_Window]:
    """Yields a window whose `.counts` is filled on exit (also when the body raises), or left None when the
    case's compile mode records no CUDA graph (nothing to count, nothing to say). `sources` is
    (torch.cuda, nodes(device_index), skips()) and defaults to torch's own; tests pass fakes."""
    window = _Window()
    if not uses_cuda_graphs(mode):
        yield window
        return
    cuda, nodes, skips = sources or _real_sources()
    why = why_unavailable(device, cuda)
    if why is not None:
        try:
            yield window
        finally:
            window.counts = CudaGraphCounts(None, None, why)
        return
    index = _device_index(device)
    nodes_before, skips_before = nodes(index), skips()
    try:
        yield window
    finally:
        window.counts = CudaGraphCounts(nodes(index) - nodes_before, skips() - skips_before)


def with_cuda_graphs(stats: CompileStats | None, counts: CudaGraphCounts | None) -> CompileStats | None:
    """The step's compile stats with its CUDA graph counts (unchanged when the case records no graph)."""
    if stats is None or counts is None:
        return stats
    return replace(
        stats,
        cuda_graph_recordings=counts.recordings,
        cuda_graph_skips=counts.skips,
        cuda_graph_unavailable=counts.unavailable,
    )
