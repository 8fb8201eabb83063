"""The real probe path end to end, on something cheap: two published peft releases, each installed into
its own cached --target folder over this environment, imported from there, a one-case scenario run in it
by `peft-bench run`, judged, and the whole search rendered as bisect.md and bisect.json."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bench.bisect import criteria
from bench.bisect.driver import search
from bench.bisect.probe import RUN_FILE, RUNS_DIR, Target, run_key, run_probe
from tests.conftest import LOAD_A, scenario_toml

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

SCENARIO = scenario_toml(
    "bisect-smoke",
    [LOAD_A, "forward"],
    scenario={"description": "one adapter, one forward: cheap enough to run per probe"},
    matrix={"precision": ["fp32"], "compile": ["none"]},
    adapters={"a": {"rank": 4, "alpha": 8, "targets": ["q_proj"], "seed": 1}},
)
CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints" / "ci.txt"


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
    row = text.split("| 1 | 0.20.0 |")[1].split("\n")[0]
    assert "built" not in row and "reused a run of" in row, row  # the cached environment and run were reused
    assert json.loads((tmp_path / "out2" / "peft-0.20.0" / "probe.json").read_text())["results_reused"]

    # The reused run is the stored one, judged again (a planted verdict in the store is what the probe
    # sees) ... and --rerun runs the scenarios instead of reading the store.
    (stored,) = [p for p in (envs_cache / RUNS_DIR).iterdir() if "0.20.0" in (p / RUN_FILE).read_text()]
    planted = json.loads((stored / "results.json").read_text())
    planted["cases"][0]["verdict"], planted["cases"][0]["reason"] = "fail", "planted in the store"
    (stored / "results.json").write_text(json.dumps(planted))
    again = dict(
        target=Target("peft", "peft"),
        version="0.20.0",
        scenarios=[str(scenario)],
        criterion=criteria.parse("verdict:fail"),
        cases=(),
        out=tmp_path / "out3",
        cache_root=envs_cache,
        constraints_text=CONSTRAINTS.read_text(),
        extra_env={"PEFT_BENCH_CACHE": str(cache_root), "OMP_NUM_THREADS": "1"},
    )
    record = run_probe(**again)
    assert record.results_reused and record.state == "bad" and "planted in the store" in record.reason, record
    record = run_probe(**again, rerun=True)
    assert not record.results_reused and record.state == "good" and record.run_s > 0, record


def test_run_key_changes_with_what_a_run_depends_on(tmp_path):
    """A stored run is judged again only for the same version, environment folder, scenarios, interpreter
    and run-changing environment variables; anything else (the PATH here) does not matter."""
    from bench.bisect.envs import ProbeEnv

    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO)
    env = ProbeEnv(tmp_path / "env", ("peft==0.20.0",), True, "", 0.0)
    child = {"OMP_NUM_THREADS": "1", "PATH": "/bin"}
    key = run_key("0.20.0", env, [str(scenario)], "/usr/bin/python3", child)
    assert key == run_key("0.20.0", env, [str(scenario)], "/usr/bin/python3", {**child, "PATH": "/usr/bin"})
    assert key == run_key("0.20.0", env, [str(tmp_path)], "/usr/bin/python3", child)  # a folder: its files
    changed = [
        run_key("0.21.2", env, [str(scenario)], "/usr/bin/python3", child),
        run_key(
            "0.20.0",
            ProbeEnv(env.path, ("peft==0.20.0", "x==1"), True, "", 0.0),
            [str(scenario)],
            "/usr/bin/python3",
            child,
        ),
        run_key("0.20.0", env, [str(scenario)], "/usr/bin/python3.12", child),
        run_key("0.20.0", env, [str(scenario)], "/usr/bin/python3", {**child, "OMP_NUM_THREADS": "2"}),
    ]
    scenario.write_text(SCENARIO.replace("rank = 4", "rank = 8"))
    changed.append(run_key("0.20.0", env, [str(scenario)], "/usr/bin/python3", child))
    assert key not in changed and len(set(changed)) == len(changed)
