"""`peft-bench merge` writes summary.md without the report's answers (a bootstrap over every case's timed calls:
`peft-bench report` computes them) and with the same "Not a plain pass" lines a run's summary has; the merged
records are those of the inputs, whatever the writer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bench.cli.main import main
from bench.report.answers_view import summary_lines
from bench.results.store import load, save
from bench.spec.codec import to_dict

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "results"


def _section(lines: list[str], title: str) -> list[str]:
    if title not in lines:
        return []
    rest = lines[lines.index(title) + 2 :]
    return rest[: rest.index("")]


def _halves(tmp_path: Path, source: Path) -> tuple[Path, Path]:
    results = load(source)
    cut = len(results.cases) // 2
    one, two = tmp_path / "one", tmp_path / "two"
    save(one, dataclasses.replace(results, cases=results.cases[:cut]))
    save(two, dataclasses.replace(results, cases=results.cases[cut:]))
    return one, two


def test_merge_summary_lists_the_odd_cases_as_a_run_and_points_to_the_report(tmp_path, capsys):
    source = FIXTURES / "noise-a"
    one, two = _halves(tmp_path, source)
    out = tmp_path / "merged"
    assert main(["merge", str(out), str(one), str(two)]) == 0
    capsys.readouterr()
    text = (out / "summary.md").read_text().splitlines()
    whole = summary_lines(load(source))
    odd = _section(whole, "## Not a plain pass")
    assert odd and _section(text, "## Not a plain pass") == odd
    assert f"Not computed by merge (they pool every case's timed calls): `peft-bench report {out}`." in text
    # Control: the run's own summary has decision lines, which the merge's does not compute.
    assert any(line.startswith("- ") for line in _section(whole, "## Which to use"))
    assert not any(line.startswith("- ") for line in _section(text, "## Which to use"))


def test_merged_records_are_the_inputs_records_with_their_provenance(tmp_path, capsys):
    source = FIXTURES / "failing"
    one, two = _halves(tmp_path, source)
    out = tmp_path / "merged"
    assert main(["merge", str(out), str(one), str(two)]) == 0
    capsys.readouterr()
    merged = load(out)
    original = load(source)
    assert [c.case_id for c in merged.cases] == [c.case_id for c in original.cases]
    for m, o in zip(merged.cases, original.cases, strict=True):
        assert m.worker.results_file in (str(one), str(two))
        assert to_dict(dataclasses.replace(m, worker=o.worker)) == to_dict(o)  # nothing else changed
    # Control: a changed case is told apart by the same comparison.
    changed = dataclasses.replace(merged.cases[0], reason="other", worker=original.cases[0].worker)
    assert to_dict(changed) != to_dict(original.cases[0])
