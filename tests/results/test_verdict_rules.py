"""Nothing is compared or published under older verdict rules (bench.VERDICT_RULES_VERSION, docs/verdicts.md).

A results file records the rules it was judged under. gate refuses a baseline judged under other rules,
compare says so, merge refuses to mix them, the compat table flags a row, and every results file committed
under reports/ is current or sits in a folder whose STALE.md says which rules judged it and why it is kept.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from bench import VERDICT_RULES_VERSION
from bench.cli.compat_table import Combination, compat_markdown
from bench.errors import BenchInputError
from bench.results.records import CaseResult, Results
from bench.results.shards import Source, merge
from bench.results.store import load, save
from tests.conftest import REPO

PARAMS = {"precision": "fp32", "compile": "none", "hotswap_path": "transformers"}


def _results(rules: int, shard: str | None = None, case_id: str = "s[fp32-none]") -> Results:
    from bench.results.environment import collect

    case = CaseResult(case_id, "s", "s.toml", PARAMS, "pass", "")
    return Results(1, "0.1.0", "now", collect(), ("s",), (case,), shard=shard, verdict_rules=rules)


def test_a_run_records_the_rules_it_was_judged_under(tmp_path):
    save(tmp_path / "new", _results(VERDICT_RULES_VERSION))
    assert load(tmp_path / "new").verdict_rules == VERDICT_RULES_VERSION
    # a file from before the field reads as rules 1
    data = json.loads((tmp_path / "new" / "results.json").read_text())
    del data["verdict_rules"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps(data))
    assert load(tmp_path / "old").verdict_rules == 1


def test_gate_refuses_a_baseline_judged_under_older_rules(tmp_path, cli):
    save(tmp_path / "base", _results(1))
    save(tmp_path / "cur", _results(VERDICT_RULES_VERSION))
    r = cli("gate", tmp_path / "cur", "--baseline", tmp_path / "base")
    assert r.returncode == 2
    assert "judged under verdict rules 1" in r.stderr and "--update-baseline" in r.stderr
    save(tmp_path / "base", _results(VERDICT_RULES_VERSION))  # control: same rules, the gate runs
    assert cli("gate", tmp_path / "cur", "--baseline", tmp_path / "base").returncode == 0


def test_compare_says_when_the_rules_differ(tmp_path, cli):
    save(tmp_path / "base", _results(1))
    save(tmp_path / "cur", _results(VERDICT_RULES_VERSION))
    assert (
        "note: the baseline was judged under verdict rules 1"
        in cli("compare", tmp_path / "base", tmp_path / "cur").stdout
    )
    save(tmp_path / "base", _results(VERDICT_RULES_VERSION))
    assert "note:" not in cli("compare", tmp_path / "base", tmp_path / "cur").stdout


def test_merge_refuses_shards_judged_under_different_rules():
    a = Source("a", _results(1, shard="1/2", case_id="s[a]"))
    b = Source("b", _results(VERDICT_RULES_VERSION, shard="2/2", case_id="s[b]"))
    with pytest.raises(BenchInputError, match="verdict rules"):
        merge([a, b])
    merged = merge([a, Source("b", replace(b.results, verdict_rules=1))])  # control
    assert merged.verdict_rules == 1


def test_the_compat_table_flags_a_row_judged_under_older_rules():
    def row(rules):
        return Combination("t_p", "5.23.0", "0.21.2", "ran", "", _results(rules))

    assert "judged under verdict rules 1" in compat_markdown([row(1)])
    assert "judged under verdict rules" not in compat_markdown([row(VERDICT_RULES_VERSION)])


def _stale_note(path):
    """The STALE.md in the results file's folder or a parent below reports/, if any."""
    for folder in path.parents:
        if folder == REPO / "reports" or REPO / "reports" not in folder.parents:
            return None
        if (folder / "STALE.md").is_file():
            return (folder / "STALE.md").read_text()
    return None


def test_every_committed_results_file_is_current_or_says_why_not():
    files = sorted((REPO / "reports").rglob("results.json"))
    assert files
    bad = []
    for path in files:
        rules = load(path).verdict_rules
        if rules == VERDICT_RULES_VERSION:
            continue
        note = _stale_note(path)
        if note is None or not re.search(rf"verdict rules {rules}\b", note):
            bad.append(f"{path.relative_to(REPO)}: verdict rules {rules}, no STALE.md naming them")
    assert bad == []
