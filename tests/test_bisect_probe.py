"""The real probe path end to end, on something cheap: two published peft releases, each installed into
its own cached --target folder over this environment, imported from there, a one-case scenario run in it
by `peft-bench run`, judged, and the whole search rendered as bisect.md and bisect.json."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from bench.bisect import criteria
from bench.bisect.driver import search
from bench.bisect.probe import Target

SCENARIO = """\
[scenario]
name = "bisect-smoke"
description = "one adapter, one forward: cheap enough to run per probe"
model = "builtin:tiny-llama"

[matrix]
precision = ["fp32"]
compile = ["none"]

[adapters.a]
rank = 4
alpha = 8
targets = ["q_proj"]
seed = 1

[[steps]]
op = "load_adapter"
adapter = "a"

[[steps]]
op = "forward"
"""
CONSTRAINTS = Path(__file__).resolve().parent.parent / "constraints" / "ci.txt"


def test_real_probes_over_two_peft_releases(tmp_path, cache_root):
    scenario = tmp_path / "smoke.toml"
    scenario.write_text(textwrap.dedent(SCENARIO))
    out, envs_cache = tmp_path / "out", tmp_path / "envs-cache"
    # both releases hold with transformers 5.23 (reports/compat), so nothing is bad ...
    lines = []
    answer, text = search(
        Target("peft", "peft"),
        "0.20.0",
        "0.21.2",
        [str(scenario)],
        criteria.parse("expectation:matches_reference"),
        (),
        out,
        envs_cache,
        CONSTRAINTS.read_text(),
        "test",
        candidates=["0.20.0", "0.21.2"],
        progress=lines.append,
        extra_env={"PEFT_BENCH_CACHE": str(cache_root), "OMP_NUM_THREADS": "1"},
    )
    assert answer.kind == "no_bad", text
    for version in ("0.20.0", "0.21.2"):
        probe = json.loads((out / f"peft-{version}" / "probe.json").read_text())
        assert probe["stage"] == "ran" and probe["state"] == "good", probe
        assert probe["imported"].startswith(version) and str(envs_cache) in probe["imported"]
        assert probe["installed"][0] == f"peft=={version}"
        assert not any(p.startswith("torch==") for p in probe["installed"])  # torch comes from the base
        results = json.loads((out / f"peft-{version}" / "results.json").read_text())
        assert results["environment"]["libraries"]["peft"] == version  # the run really used the probe's peft
    data = json.loads((out / "bisect.json").read_text())
    assert data["answer"]["kind"] == "no_bad" and set(data["probes"]) == {"0.20.0", "0.21.2"}
    assert "| 1 | 0.20.0 | 1 | good | ran |" in text and "| 2 | 0.21.2 | 2 | good | ran |" in text
    # ... and an expectation the cases never record is untestable, not good
    answer, text = search(
        Target("peft", "peft"),
        "0.20.0",
        "0.21.2",
        [str(scenario)],
        criteria.parse("expectation:recompiles"),
        (),
        tmp_path / "out2",
        envs_cache,
        CONSTRAINTS.read_text(),
        "test",
        candidates=["0.20.0", "0.21.2"],
        progress=lines.append,
        extra_env={"PEFT_BENCH_CACHE": str(cache_root), "OMP_NUM_THREADS": "1"},
    )
    assert answer.kind == "good_is_bad" and "untestable (skipped)" in text and "no recompiles outcome" in text
    assert "built" not in text.split("| 1 | 0.20.0 |")[1].split("\n")[0]  # the cached environment was reused
