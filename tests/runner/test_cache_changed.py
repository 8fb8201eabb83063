"""A cache entry truncated while a case reads it (issue 32): the case's reason names the file.

The library's own error about a truncated safetensors file ("Error while deserializing header ...") names no
file; the worker adds the cache entries that changed since the case began (bench.engine.sources.cache.changed_since)."""

from __future__ import annotations

import threading
import time

import pytest

from bench.worker import inject

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

SCENARIO = """
[scenario]
name = "truncated"
model = "builtin:tiny-llama"

[adapters.a]
rank = 4
alpha = 8
seed = 1

[[steps]]
op = "forward"

[[steps]]
op = "load_adapter"
adapter = "a"

[[steps]]
op = "forward"
"""


def _truncate_when_paused(cases, cache, done: list[str]) -> None:
    deadline = time.monotonic() + 180
    while not any(inject.MARKER in log.read_text() for log in cases.glob("*.log")):
        if time.monotonic() > deadline:
            return
        time.sleep(0.02)
    for weights in sorted(cache.glob("adapters/*/adapter_model.safetensors")):
        weights.write_bytes(weights.read_bytes()[:100])
        done.append(weights.parent.name)


@pytest.mark.slow
def test_a_cache_file_truncated_during_the_case_is_named_in_its_reason(tmp_path, monkeypatch):
    """Control: without with_changed_cache the reason was only the library's error, naming no file."""
    from bench.runner.launch import RunOptions
    from bench.runner.run import run_cases
    from bench.scenario import load_scenario
    from bench.spec.cases import expand

    path = tmp_path / "truncated.toml"
    path.write_text(SCENARIO)
    cache, out = tmp_path / "cache", tmp_path / "out"
    monkeypatch.setenv(inject.ENV_VAR, "truncated:slow@2")  # a pause before load_adapter: cut the file then
    truncated: list[str] = []
    thread = threading.Thread(target=_truncate_when_paused, args=(out / "cases", cache, truncated))
    thread.start()
    try:
        (case,) = run_cases(expand(load_scenario(path)), RunOptions(out_dir=out, cache_root=cache)).cases
    finally:
        thread.join()
    assert truncated, "the case never paused before load_adapter"
    assert case.verdict in ("error", "fail"), case.reason
    assert "the cache changed while the case ran" in case.reason, case.reason
    assert f"adapters/{truncated[0]}: adapter_model.safetensors" in case.reason, case.reason
    assert "sha256" in case.reason, case.reason


def test_changed_since_lists_only_entries_touched_after_the_mark_and_broken(tmp_path):
    """Pure on a hand-made cache: an intact entry, a broken one touched before the mark, and a broken one
    touched after it; only the last is listed."""
    import json
    import os

    from bench.engine.sources.cache import CONTENT_FILE, changed_since, content_hashes

    def entry(name: str, data: bytes) -> os.PathLike:
        folder = tmp_path / "adapters" / name
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(data)
        (folder / CONTENT_FILE).write_text(json.dumps(content_hashes(folder)))
        return folder / "adapter_model.safetensors"

    intact, old, new = entry("intact", b"x" * 64), entry("old", b"y" * 64), entry("new", b"z" * 64)
    mark = time.time()
    for f, when in ((intact, mark + 5), (old, mark - 100), (new, mark + 5)):
        f.write_bytes(f.read_bytes() if f is intact else b"cut")
        os.utime(f, (when, when))
    (line,) = changed_since(tmp_path, mark)
    assert line.startswith("adapters/new: adapter_model.safetensors does not match"), line
