"""The pytest-benchmark micro-benchmarks (benchmarks/) run once, quickly, as a user runs them: a JSON run
that must carry recompile counts and memory in extra_info, then a second run that compares against it.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

pytest_plugins = ["pytester"]

BENCHMARKS = REPO / "benchmarks"
EXPECTED = {
    "test_hotswap[transformers]",
    "test_hotswap[peft]",
    "test_set_adapter",
    "test_toggle[disable_adapters]",
    "test_toggle[enable_adapters]",
    "test_compiled_forward_after_swap[transformers]",
    "test_compiled_forward_after_swap[peft]",
    "test_compiled_forward_after_plain_load",
}


@pytest.mark.slow
def test_benchmarks_write_json_with_extra_info_and_compare(pytester, cache_root, monkeypatch):
    monkeypatch.setenv("PEFT_BENCH_CACHE", str(cache_root))
    # Under pytest-xdist (nox -s tests) this test runs in a worker, and pytest-benchmark reads the inherited
    # PYTEST_XDIST_WORKER as "xdist is on" and disables itself: the inner run is a plain pytest.
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)
    storage = f"file://{pytester.path / 'storage'}"
    out = pytester.path / "bench.json"
    first = pytester.runpytest_subprocess(
        str(BENCHMARKS),
        "--benchmark-only",
        "--bench-rounds",
        "1",
        f"--benchmark-json={out}",
        f"--benchmark-storage={storage}",
        "--benchmark-autosave",
        "-p",
        "no:cacheprovider",
    )
    first.assert_outcomes(passed=len(EXPECTED))
    data = json.loads(out.read_text())
    assert data["machine_info"]["peft_bench_libraries"]["peft"]
    assert data["machine_info"]["peft_bench_torch_threads"] >= 1
    by_name = {b["name"]: b for b in data["benchmarks"]}
    assert set(by_name) == EXPECTED
    for name, b in by_name.items():
        info = b["extra_info"]
        assert b["stats"]["rounds"] == 1, name
        for key in ("recompiles", "frame_compiles", "graph_breaks", "rss_peak_bytes", "rss_delta_bytes"):
            assert key in info, (name, key)
        assert info["rss_peak_bytes"] is None or info["rss_peak_bytes"] > 0
        assert "cuda_allocated_peak_bytes" in info["memory_unavailable"] or info["device"].startswith("cuda")
    # A hotswap keeps the compiled graph; a plain load does not. The second is the counter's control: if it
    # reported 0 too, the 0 of the first would mean nothing.
    assert by_name["test_compiled_forward_after_swap[peft]"]["extra_info"]["recompiles"] == 0
    assert by_name["test_compiled_forward_after_swap[peft]"]["extra_info"]["first_call_ms"] > 0
    assert by_name["test_compiled_forward_after_plain_load"]["extra_info"]["recompiles"] >= 1
    assert by_name["test_compiled_forward_after_plain_load"]["extra_info"]["recompile_reasons"]

    second = pytester.runpytest_subprocess(
        str(BENCHMARKS),
        "--benchmark-only",
        "--bench-rounds",
        "1",
        "-k",
        "set_adapter",
        f"--benchmark-storage={storage}",
        "--benchmark-compare",
        "-p",
        "no:cacheprovider",
    )
    second.assert_outcomes(passed=1, deselected=len(EXPECTED) - 1)
    text = second.stdout.str() + second.stderr.str()
    assert "Comparing against benchmarks from" in text
    assert "test_set_adapter (0001_" in text and "test_set_adapter (NOW)" in text


def test_synced_passes_arguments_and_waits_for_the_device(monkeypatch):
    """benchmarks' CUDA wrapper, with a fake torch.cuda.synchronize that records when it is called."""
    import torch

    from benchmarks.conftest import synced

    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: events.append("sync"))

    def swap(location, adapter_name="default"):
        events.append(("swap", location, adapter_name))
        return "out"

    assert synced(swap, "cpu") is swap  # nothing to wait for on CPU
    assert synced(swap, "cuda")("b", adapter_name="x") == "out"
    assert events == [("swap", "b", "x"), "sync"]  # the wait comes after the work it must include
