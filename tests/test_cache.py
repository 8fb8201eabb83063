"""The model/adapter cache: built once, reused, keyed by the full spec and versions, safe to fill at once."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.scenario.schema import AdapterSpec
from bench.sources.adapters import resolve_adapter
from bench.sources.cache import cache_key
from bench.sources.models import resolve_model
from tests.conftest import REPO

FILL = """
import sys
from pathlib import Path
from bench.sources.models import resolve_model
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
