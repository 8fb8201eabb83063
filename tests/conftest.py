"""Shared fixtures. Real models and adapters only: built once per test session into a private cache."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = REPO / "scenarios"


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    # A per-session cache keeps tests independent of a user's ~/.cache; PEFT_BENCH_TEST_CACHE reuses one
    # across sessions when iterating locally.
    if os.environ.get("PEFT_BENCH_TEST_CACHE"):
        return Path(os.environ["PEFT_BENCH_TEST_CACHE"])
    return tmp_path_factory.mktemp("peft-bench-cache")


@pytest.fixture
def write_scenario(tmp_path):
    """Write a scenario file from (dedented) TOML text and return its path."""

    def write(text: str, name: str = "scenario.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


MINIMAL = """
[scenario]
name = "minimal"
model = "builtin:tiny-llama"

[matrix]
compile = ["aot_eager"]

[adapters.a]
rank = 4
alpha = 8
seed = 1

[[steps]]
op = "load_adapter"
adapter = "a"

[[steps]]
op = "compile"

[[steps]]
op = "forward"
"""
