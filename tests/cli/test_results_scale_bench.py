"""benchmarks/results_scale.py: the files it builds are results files as `save` lays them out (each loads, with
distinct case ids, through its columnar copy), and a command past its timeout is killed and recorded as such."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq

from bench.results import columnar
from bench.results.store import load, save
from bench.spec.codec import to_dict
from benchmarks.results_scale import _measure, build, markdown

REPO = Path(__file__).resolve().parents[2]


def test_built_files_load_with_distinct_cases_in_the_layout_save_writes(tmp_path):
    folder = build(tmp_path / "a", 12)
    data = json.loads((folder / "results.json").read_text())
    assert len(data["cases"]) == 12 and len({c["case_id"] for c in data["cases"]}) == 12
    assert columnar.read(folder / "results.json") is not None  # the copy matches the file built beside it
    loaded = load(folder)
    assert to_dict(loaded) == data
    save(tmp_path / "saved", loaded)  # save writes the same bytes: the benchmark measures files save writes
    assert (tmp_path / "saved" / "results.json").read_text() == (folder / "results.json").read_text()
    # and the same columnar rows: what merge copies from them (CSV text, summary lines) included
    built, saved = (
        pq.read_table(f / columnar.COLUMNAR_FILE).to_pylist() for f in (folder, tmp_path / "saved")
    )
    assert built == saved and all(row[n] is not None for row in built for n in columnar.PASS_THROUGH_COLUMNS)


def test_a_command_past_its_timeout_is_killed_and_recorded(tmp_path):
    slow = _measure([sys.executable, "-c", "import time; time.sleep(60)"], REPO, timeout_s=1)
    assert slow["timed_out"] and slow["exit"] == -9 and slow["wall_s"] < 30
    quick = _measure([sys.executable, "-c", "print('done')"], REPO, timeout_s=60)  # control
    assert not quick["timed_out"] and quick["exit"] == 0 and quick["output_tail"].strip() == "done"
    size = {"cases": 1, "results_json_bytes": 1, "load_before": [1.0], "load_after": [1.0], "commands": {}}
    for name, r in (("slow", slow), ("quick", quick)):
        size["commands"][name] = {
            "n": 1,
            "wall_s_median": r["wall_s"],
            "wall_s_min": r["wall_s"],
            "wall_s_max": r["wall_s"],
            "timed_out": int(r["timed_out"]),
            "timeout_s": r["timeout_s"],
            "peak_rss_bytes_max": r["peak_rss_bytes"],
            "cpu_s_median": r["cpu_s"],
            "exit_codes": [r["exit"]],
        }
    doc = {"command": "c", "machine": "m", "python": "p", "started_at": "t", "load_note": "", "sizes": [size]}
    text = markdown(doc)
    assert "| slow | 1 | no answer in 1 s (killed) |" in text
    assert "| quick | 1 | no answer" not in text


def test_the_current_file_can_come_from_another_run_of_the_same_cases(tmp_path):
    """--current-from: copy i of the other run is copy i of the baseline (the same case id), with that run's
    own figures, so gate and compare meet samples that differ as two runs' do; a run of other cases is
    refused, naming the file."""
    import pytest

    from benchmarks.results_scale import SOURCE, same_cases

    doc = json.loads(SOURCE.read_text())
    for case in doc["cases"]:  # another run: every timing sample 1 % slower
        for step in case["steps"]:
            if step.get("timing"):
                step["timing"]["samples_ms"] = [x * 1.01 for x in step["timing"]["samples_ms"]]
    other = tmp_path / "other" / "results.json"
    other.parent.mkdir()
    other.write_text(json.dumps(doc))
    same_cases(SOURCE, other)
    a, b = (load(build(tmp_path / name, 7, source=src)) for name, src in (("a", SOURCE), ("b", other)))
    assert [c.case_id for c in a.cases] == [c.case_id for c in b.cases]
    pairs = [
        (s, t)
        for x, y in zip(a.cases, b.cases, strict=True)
        for s, t in zip(x.steps, y.steps, strict=True)
        if s.timing
    ]
    assert pairs and all(
        t.timing.samples_ms == tuple(v * 1.01 for v in s.timing.samples_ms) for s, t in pairs
    )
    doc["cases"] = doc["cases"][1:]  # the control: a run without the first case
    other.write_text(json.dumps(doc))
    with pytest.raises(SystemExit, match="--current-from .*other/results.json"):
        same_cases(SOURCE, other)


def test_a_command_runs_this_checkout_first_and_keeps_a_pythonpath_given(tmp_path, monkeypatch):
    """Another library version is measured by putting it on PYTHONPATH: the commands get it after this
    checkout (the benchmark once replaced it, and measured the installed version under another's label)."""
    show = [sys.executable, "-c", "import os; print(os.environ['PYTHONPATH'])"]
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert _measure(show, REPO, timeout_s=60)["output_tail"].strip().split(os.pathsep) == [
        str(REPO),
        str(tmp_path),
    ]
    monkeypatch.delenv("PYTHONPATH")  # control: none given, this checkout alone
    assert _measure(show, REPO, timeout_s=60)["output_tail"].strip() == str(REPO)


def test_the_table_names_the_matplotlib_each_row_was_measured_with():
    size = {"cases": 1, "results_json_bytes": 1, "load_before": [1.0], "load_after": [1.0], "commands": {}}
    size["commands"]["report"] = {
        "n": 1,
        "wall_s_median": 1.0,
        "wall_s_min": 1.0,
        "wall_s_max": 1.0,
        "peak_rss_bytes_max": 1,
        "exit_codes": [0],
    }
    doc = {"command": "c", "machine": "m", "python": "p", "started_at": "t", "load_note": ""}
    with_libs = {**size, "note": "label", "libraries": {"matplotlib": "3.10.9"}}
    text = markdown({**doc, "sizes": [with_libs, size]})
    assert "| label [matplotlib 3.10.9] |" in text
    assert text.count("matplotlib") == 1  # a row recorded before the versions were names none
