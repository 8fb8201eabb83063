"""The model/adapter cache: built once, reused, keyed by the full spec and versions, safe to fill at once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.engine.sources.adapters import resolve_adapter
from bench.engine.sources.cache import cache_key
from bench.engine.sources.models import resolve_model
from bench.spec.schema import AdapterSpec
from tests.conftest import FAST_TIMING, LOAD_A, REPO, scenario_toml

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

FILL = """
import sys
from pathlib import Path
from bench.engine.sources.models import resolve_model
r = resolve_model("builtin:tiny-gpt2", Path(sys.argv[1]))
print(r.location, r.built_now)
"""


def test_two_processes_fill_one_entry_at_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FILL, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    locations = {o[0] for o in outs}
    assert len(locations) == 1  # both use the one complete entry
    (folder,) = locations
    entries = list((tmp_path / "models").iterdir())
    assert [e.name for e in entries] == [os.path.basename(folder)]  # no leftover temporary folder
    assert (tmp_path / "models" / entries[0].name / "model.safetensors").is_file()


def test_reused_and_keyed_by_spec(tmp_path):
    first = resolve_model("builtin:tiny-llama", tmp_path)
    again = resolve_model("builtin:tiny-llama", tmp_path)
    assert first.built_now and not again.built_now and first.location == again.location
    a = resolve_adapter(AdapterSpec(key="a", rank=4, seed=1), first, tmp_path)
    b = resolve_adapter(AdapterSpec(key="a", rank=4, seed=2), first, tmp_path)
    assert a.location != b.location  # a different seed is a different adapter
    assert not resolve_adapter(AdapterSpec(key="a", rank=4, seed=1), first, tmp_path).built_now
    assert cache_key("x", {"v": 1}) != cache_key("x", {"v": 2})


# ---------------------------------------------------------------------------------------------------------
# Cache entries: content hash recorded at build, checked before use


def _flip_tensor_byte(file, offset_fraction: float, xor: int) -> None:
    """Change one byte of tensor data, leaving the safetensors header (and so every shape) intact."""
    import struct

    raw = bytearray(file.read_bytes())
    (header_len,) = struct.unpack("<Q", raw[:8])
    start = 8 + header_len
    at = start + int(offset_fraction * (len(raw) - start - 1))
    raw[at] ^= xor
    file.write_bytes(bytes(raw))


def _small_build(tmp):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.arange(64, dtype=torch.float32).reshape(8, 8)}, str(tmp / "weights.safetensors"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.floats(0, 1), xor=st.integers(1, 255))
def test_altered_tensor_data_is_rebuilt(tmp_path_factory, offset, xor):
    """40 generated alterations (one byte anywhere in the data, any xor) of a real safetensors file.
    Control: without the hash check the altered entry was returned as is (`built_now` False; seen failing)."""
    from safetensors.torch import load_file

    from bench.engine.sources.cache import cached_folder

    root = tmp_path_factory.mktemp("cache")
    folder, built = cached_folder(root, "models", "m", {"v": 1}, _small_build)
    good = (folder / "weights.safetensors").read_bytes()
    _flip_tensor_byte(folder / "weights.safetensors", offset, xor)
    load_file(str(folder / "weights.safetensors"))  # the header is intact: it still loads
    again, rebuilt = cached_folder(root, "models", "m", {"v": 1}, _small_build)
    assert built and rebuilt and again == folder
    assert (folder / "weights.safetensors").read_bytes() == good
    assert [p.name for p in (root / "models").iterdir()] == [folder.name]  # nothing stale left behind


def test_entries_without_a_hash_are_rebuilt_not_trusted(tmp_path):
    from bench.engine.sources.cache import CONTENT_FILE, cached_folder

    folder, _ = cached_folder(tmp_path, "models", "m", {"v": 1}, _small_build)
    (folder / CONTENT_FILE).unlink()  # an entry written before this change
    _, rebuilt = cached_folder(tmp_path, "models", "m", {"v": 1}, _small_build)
    assert rebuilt and (folder / CONTENT_FILE).is_file()
    _, rebuilt = cached_folder(tmp_path, "models", "m", {"v": 1}, _small_build)
    assert not rebuilt  # a good entry is reused


def test_a_case_does_not_pass_on_altered_cached_weights(tmp_path):
    """A real case (built-in model and a generated adapter) after the cached adapter's lora_B data was
    altered: the entry is rebuilt, and the case runs on the weights its seed gives (same outputs as a case
    on a fresh cache), never on the altered ones that subject and reference would both load."""
    from bench.engine.sources.cache import content_hashes
    from bench.spec.cases import expand
    from bench.worker.execute import run_case

    scenario = tmp_path / "alter.toml"
    scenario.write_text(scenario_toml("alter", [LOAD_A, "forward"], timing=FAST_TIMING))
    from bench.scenario import load_scenario

    (case,) = expand(load_scenario(scenario))
    cache = tmp_path / "cache"
    first = run_case(case, cache, work_dir=tmp_path / "w1")
    (entry,) = (cache / "adapters").iterdir()
    good = content_hashes(entry)
    _flip_tensor_byte(entry / "adapter_model.safetensors", 0.5, 0x40)
    assert content_hashes(entry) != good
    second = run_case(case, cache, work_dir=tmp_path / "w2")
    assert content_hashes(entry) == good  # rebuilt from its spec
    assert first.verdict == second.verdict == "pass"
    # The same distance from the base in both runs: the adapter the seed gives, not the altered file.
    effects = [[s.contrast.max_abs_diff for s in r.steps if s.contrast] for r in (first, second)]
    assert effects[0] == effects[1] and effects[0], effects
