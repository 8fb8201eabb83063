"""benchmarks/run_facts.py, load_parts.py, save_cost.py, report_phases.py and serving_check.py's stream flags,
the scripts behind figures the README quotes: their numbers are the records' own (checked against the JSON read
directly, and moved when the record moves), and bad input is refused by name."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from bench.results import columnar
from bench.results.store import load
from benchmarks import load_parts, report_phases, run_facts, save_cost
from benchmarks.results_scale import build

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "reports" / "baseline" / "results.json"


def _number(lines: list[str], pattern: str) -> float:
    (match,) = [m for line in lines if (m := re.search(pattern, line))]
    return float(match.group(1))


def test_run_facts_reads_the_records_own_figures():
    data = json.loads(BASELINE.read_text())
    lines = run_facts.facts(BASELINE)
    assert lines[0].endswith(f"{len(data['cases'])} cases, jobs {data['jobs']}")
    workers_cpu = sum(c["worker"]["cpu_s"] for c in data["cases"])
    share = _number(lines, r"CPU [\d.]+ s against the workers' \d+ s: ([\d.]+) %")
    assert share == pytest.approx(100 * data["parent_cpu_s"] / workers_cpu, abs=0.01)
    forwards = [
        s["timing"]["n"]
        for c in data["cases"]
        for s in c["steps"]
        if s["op"] == "forward" and s["timing"] and s["timing"]["n"]
    ]
    (line,) = [x for x in lines if x.startswith("forward steps, timing policy")]  # one policy in this run
    assert f"timed calls median {statistics.median(forwards):.0f} [{min(forwards)}, {max(forwards)}]" in line
    assert f"n = {len(forwards)};" in line
    compiled = [c for c in data["cases"] if c["params"].get("compile") not in (None, "none")]
    assert _number(lines, r"aot_eager: (\d+) compiled cases") == len(compiled)


def test_run_facts_moves_with_the_record(tmp_path):
    """Negative control: the run's own CPU doubled in the file doubles the share printed."""
    data = json.loads(BASELINE.read_text())
    before = _number(run_facts.facts(BASELINE), r": ([\d.]+) %$")
    data["parent_cpu_s"] *= 2
    (tmp_path / "results.json").write_text(json.dumps(data))
    after = _number(run_facts.facts(tmp_path / "results.json"), r": ([\d.]+) %$")
    assert after == pytest.approx(2 * before, abs=0.02)


def test_load_parts_times_every_part_on_a_columnar_copy(tmp_path, capsys):
    folder = build(tmp_path / "copies", 20)
    out = tmp_path / "parts.json"
    assert (
        load_parts.main(["--results", str(folder), "--cases", "20", "--rounds", "2", "--out", str(out)]) == 0
    )
    doc = json.loads(out.read_text())
    assert doc["cases"] == 20 and doc["rounds"] == 2
    assert set(doc["parts"]) == set(load_parts.PARTS)
    for part, f in doc["parts"].items():
        assert 0 < f["ms_per_case_min"] <= f["ms_per_case_median"] <= f["ms_per_case_max"], part
    assert "20 cases, n = 2 rounds" in capsys.readouterr().out


def test_load_parts_refuses_a_folder_without_a_matching_columnar_copy(tmp_path, capsys):
    folder = build(tmp_path / "copies", 3)
    (folder / columnar.COLUMNAR_FILE).unlink()
    with pytest.raises(SystemExit) as exc:
        load_parts.main(["--results", str(folder), "--rounds", "1"])
    assert exc.value.code == 2
    assert str(folder) in capsys.readouterr().err


def test_save_cost_replays_a_write_after_every_case_and_the_policy(tmp_path):
    results = load(BASELINE)
    every = save_cost.replay(results, 12, "every", tmp_path / "every")
    assert every["writes"] == 13  # one per case and the final one
    policy = save_cost.replay(results, 12, "policy", tmp_path / "policy")
    assert 1 <= policy["writes"] <= 13
    # the replayed run: the cases' recorded worker walls, and the writes on top
    walls = sum(results.cases[i % len(results.cases)].worker.wall_s for i in range(12))
    assert walls < every["run_s"] < walls + 30
    assert len(load(tmp_path / "policy").cases) == 12  # the final write holds every case, under new ids
    assert len({c.case_id for c in load(tmp_path / "policy").cases}) == 12


def test_save_cost_refuses_an_unknown_variant(capsys):
    with pytest.raises(SystemExit) as exc:
        save_cost.main([str(BASELINE), "--variants", "sometimes"])
    assert exc.value.code == 2 and "--variants" in capsys.readouterr().err


def test_report_phases_times_the_commands_own_steps(tmp_path, capsys):
    folder = build(tmp_path / "copies", 20)
    out = tmp_path / "reports"
    phases = report_phases.one_round(folder / "results.json", out)
    assert set(phases) == set(report_phases.PHASES) and all(v > 0 for v in phases.values())
    assert (out / "report.md").is_file() and (out / "report.html").is_file()  # the reports were written
    verdicts = [c.verdict for c in load(folder / "results.json").cases]
    counts = f"**{verdicts.count('pass')} pass, {verdicts.count('xfail')} xfail**"
    assert counts in (out / "report.md").read_text()  # the report of these 20 cases
    assert report_phases.main([str(folder / "results.json"), "--rounds", "1"]) == 0
    printed = capsys.readouterr().out
    assert "n = 1" in printed and all(phase in printed for phase in report_phases.PHASES)


def test_report_phases_refuses_a_missing_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        report_phases.main([str(tmp_path / "results.json")])
    assert exc.value.code == 2 and str(tmp_path / "results.json") in capsys.readouterr().err


def test_serving_check_serves_the_stream_size_it_is_given():
    """benchmarks/serving_check.py --requests / --prompts (the curve of reports/performance/serving_check.md):
    the serve step served is the scenario's with those two replaced, nothing else; without them, the
    scenario's own."""
    import argparse

    from bench.scenario import load_scenario
    from benchmarks.serving_check import _resized

    (step,) = load_scenario(REPO / "examples" / "cpu" / "serving_135m.toml").steps
    assert _resized(step, argparse.Namespace(requests=None, prompts=None)) == step
    longer = _resized(step, argparse.Namespace(requests=192, prompts=16))
    assert (
        (longer.serve.requests, longer.serve.prompts)
        == (192, 16)
        != (step.serve.requests, step.serve.prompts)
    )
    assert longer.serve.adapters == step.serve.adapters and longer.serve.seed == step.serve.seed
    assert longer.index == step.index and longer.op == "serve"


@pytest.mark.parametrize("flag", ["--requests", "--prompts"])
@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_serving_check_refuses_a_stream_size_below_one(flag, value, capsys):
    from benchmarks import serving_check

    with pytest.raises(SystemExit) as exc:
        serving_check.main(["examples/cpu/serving_135m.toml", flag, value])
    assert exc.value.code == 2 and flag in capsys.readouterr().err
