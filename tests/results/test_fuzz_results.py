"""Results files under mutation, through the command line: report, gate, compare and merge.

Seeds are real results files (tests/fixtures/results). Each example mutates one (delete, replace by any JSON
value incl. NaN, infinity, 10^30, booleans, "banana", "../x", wrap in a list, empty, unknown key, duplicate,
reverse) and hands it to `bench.cli.main.main`. The property: exit 0 or 1 with a report, or exit 2 with one
`peft-bench: error:` line that names the file; never another exception (the test fails on it), and never a
gate pass (exit 0) on a file that breaks a rule checked here independently of the loader (verdict
vocabulary, schema version, unique case ids, finite numbers, safe case ids).

Directed cases below pin the inputs of issue 15 one by one, each through all four commands.
"""

from __future__ import annotations

import copy
import json
import math
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bench import RESULTS_SCHEMA_VERSION
from bench.cli.main import main
from bench.results.records import VERDICTS
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "results"
SEEDS = ("failing", "train")
SEED_DATA = {name: json.loads((FIXTURES / name / "results.json").read_text()) for name in SEEDS}
COMMANDS = ("report", "gate", "gate-baseline", "compare", "merge")
FUZZ = settings(
    max_examples=300,
    deadline=None,
    # capsys is read out before and after each command, so one capture across examples is what we want
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

DEEP = "<a list nested 5000 deep>"
SCALARS = (
    st.sampled_from(
        [
            "banana",
            "../escape",
            "a/b",
            "",
            "pass",
            "fail",
            "not_run",
            "0.1.0",
            "9.9.9",
            float("nan"),
            float("inf"),
            -float("inf"),
            10**30,
            -1,
            0,
            2,
            True,
            False,
            None,
            DEEP,
        ]
    )
    | st.text(max_size=8)
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
# Bounded, so that hypothesis draws across the range (unbounded integers are mostly small: early paths only).
PICK = st.integers(min_value=0, max_value=2**32 - 1)
MUTATIONS = ("delete", "replace", "replace", "wrap", "empty", "unknown_key", "duplicate", "reverse")


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _mutate(data: dict, path: tuple, kind: str, value, key: str) -> None:
    if not path:
        if kind == "unknown_key":
            data[key] = value
        return
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    node = parent[last]
    if kind == "delete":
        del parent[last]
    elif kind == "replace":
        parent[last] = value
    elif kind == "wrap":
        parent[last] = [node]
    elif kind == "empty":
        parent[last] = type(node)() if isinstance(node, (dict, list, str)) else 0
    elif kind == "unknown_key" and isinstance(node, dict):
        node[key] = value
    elif kind == "duplicate" and isinstance(node, list) and node:
        node.append(copy.deepcopy(node[-1]))
    elif kind == "reverse" and isinstance(node, list):
        node.reverse()


def _keys(node) -> set[str]:
    if isinstance(node, dict):
        return set(node).union(*(_keys(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_keys(v) for v in node))
    return set()


# Half the mutations aim at a field by name (any occurrence of "verdict", "samples_ms", ...): a uniform pick
# over the thousands of paths of a results file would seldom hit the few fields a gate decides on.
FIELD_NAMES = sorted(set().union(*(_keys(d) for d in SEED_DATA.values())))
DECISIVE = (
    "verdict",
    "status",
    "case_id",
    "scenario",
    "schema_version",
    "samples_ms",
    "median_ms",
    "n",
    "cases",
)


def _dump(data) -> str:
    return json.dumps(data).replace(json.dumps(DEEP), "[" * 5000 + "]" * 5000)


# ---------------------------------------------------------------------------------------------------------
# The oracle: rules a gate must never pass, checked without the loader.

CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=,\[\]-]*")


def _finite(node) -> bool:
    if isinstance(node, float):
        return math.isfinite(node)
    if isinstance(node, list):
        return all(_finite(v) for v in node)
    if isinstance(node, dict):
        return all(_finite(v) for v in node.values())
    return True


def broken_rule(text: str) -> str | None:
    """Why this results document is invalid by a rule the gate relies on, or None if it keeps them all."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return "not JSON"
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        return "no list of cases"
    v = data.get("schema_version")
    if type(v) is not int or not 1 <= v <= RESULTS_SCHEMA_VERSION:
        return "schema version"
    if not _finite(data):
        return "non-finite number"
    ids = []
    for case in data["cases"]:
        if not isinstance(case, dict) or case.get("verdict") not in VERDICTS:
            return "verdict"
        cid = case.get("case_id")
        if not isinstance(cid, str) or not CASE_ID.fullmatch(cid):
            return "case id"
        ids.append(cid)
    if len(set(ids)) != len(ids):
        return "duplicate case id"
    return None


def run_command(command: str, bad: Path, good: Path, work: Path, capsys) -> tuple[int, str, str]:
    argv = {
        "report": ["report", str(bad), "--out", str(work / "report"), "--format", "md"],
        "gate": ["gate", str(bad), "--baseline", str(good)],
        "gate-baseline": ["gate", str(good), "--baseline", str(bad)],
        "compare": ["compare", str(good), str(bad)],
        "merge": ["merge", str(work / "merged"), str(bad)],
    }[command]
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def check_outcome(command: str, text: str, rc: int, out: str, err: str, bad: Path) -> None:
    assert rc in (0, 1, 2), (rc, out, err)
    if rc == 2:
        lines = [line for line in err.splitlines() if line.startswith("peft-bench: error:")]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert bad.name in lines[0] or "results" in lines[0], err  # names the file
        event(f"{command}: exit 2")
        return
    event(f"{command}: exit {rc}")
    why = broken_rule(text)
    assert why is None, f"{command} exited {rc} on a results file with a broken rule ({why})"
    if command.startswith("gate"):
        # The gate's own verdict line: a mutated case id may itself read "PASS" (hypothesis found one).
        assert ("peft-bench gate: PASS" in out) == (rc == 0), out


@pytest.mark.slow
@FUZZ
@given(
    seed=st.sampled_from(SEEDS),
    command=st.sampled_from(COMMANDS),
    mutations=st.lists(
        st.tuples(
            PICK,
            st.none() | st.sampled_from(DECISIVE) | st.sampled_from(FIELD_NAMES),
            st.sampled_from(MUTATIONS),
            VALUES,
            st.text(max_size=6),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_mutated_results_files(seed, command, mutations, capsys):
    data = copy.deepcopy(SEED_DATA[seed])
    for pick, field, kind, value, key in mutations:
        paths = list(_paths(data))
        named = [p for p in paths if p and p[-1] == field]
        paths = named or paths
        _mutate(data, paths[pick % len(paths)], kind, value, key)
    text = _dump(data)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bad = work / "mutated.json"
        bad.write_text(text)
        rc, out, err = run_command(command, bad, FIXTURES / seed / "results.json", work, capsys)
        check_outcome(command, text, rc, out, err, bad)


# Scalars replaced in kind: any text where a string is (a verdict, a status, a case id, a version), any number
# where a number is (NaN, infinity, negative, huge). Finds what a structural pick over the whole file seldom hits.
SCALAR_FUZZ = settings(FUZZ, max_examples=150)
NEW_TEXT = st.text(max_size=12) | st.sampled_from(["banana", "../x[fp32-none]", "a/b", "..", "PASS", "pass "])
NEW_NUMBER = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, -1, 10**6])
)


@pytest.mark.slow
@SCALAR_FUZZ
@given(
    seed=st.sampled_from(SEEDS),
    command=st.sampled_from(COMMANDS),
    kind=st.sampled_from((str, float)),
    picks=st.lists(st.tuples(PICK, NEW_TEXT, NEW_NUMBER), min_size=1, max_size=3),
)
def test_mutated_scalars(seed, command, kind, picks, capsys):
    data = copy.deepcopy(SEED_DATA[seed])

    def leaf(path):
        node = data
        for part in path:
            node = node[part]
        return node

    for pick, text, number in picks:
        wanted = (str,) if kind is str else (int, float)
        # By field name first (the name of the field, or of the list holding the value), then one occurrence:
        # a verdict is 4 of the thousands of strings in a results file.
        by_name: dict[str, list[tuple]] = {}
        for p in _paths(data):
            if p and type(leaf(p)) in wanted:
                name = next((str(part) for part in reversed(p) if isinstance(part, str)), "")
                by_name.setdefault(name, []).append(p)
        names = sorted(by_name)
        paths = by_name[names[pick % len(names)]]
        _mutate(
            data, paths[(pick // len(names)) % len(paths)], "replace", text if kind is str else number, ""
        )
    text = _dump(data)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bad = work / "mutated.json"
        bad.write_text(text)
        rc, out, err = run_command(command, bad, FIXTURES / seed / "results.json", work, capsys)
        check_outcome(command, text, rc, out, err, bad)


# ---------------------------------------------------------------------------------------------------------
# Directed: the inputs of issue 15, each through every command; and the seeds themselves as the control.


def _case0(d):
    return d["cases"][0]


def _first_timing(d):
    for case in d["cases"]:
        for step in case["steps"]:
            if step.get("timing"):
                return step["timing"]
    raise AssertionError("seed has no timing")


DIRECTED = {
    "params as a list": (
        lambda d: _case0(d).__setitem__("params", ["fp32"]),
        "cases[0].params: expected a table",
    ),
    "environment as a list": (lambda d: d.__setitem__("environment", []), "environment: expected a table"),
    "cases null": (lambda d: d.__setitem__("cases", None), "cases: expected a list, got null"),
    "cases a table": (lambda d: d.__setitem__("cases", {}), "cases: expected a list, got a table"),
    "deep nesting in args": (
        lambda d: _case0(d)["steps"][0].__setitem__("args", {"x": DEEP}),
        "nested",
    ),
    "unknown verdict": (lambda d: _case0(d).__setitem__("verdict", "banana"), "unknown verdict 'banana'"),
    "unknown step status": (
        lambda d: _case0(d)["steps"][0].__setitem__("status", "ok"),
        "cases[0].steps[0].status: unknown step status",
    ),
    "schema version 0": (lambda d: d.__setitem__("schema_version", 0), "schema_version: 0 is not"),
    "schema version -1": (lambda d: d.__setitem__("schema_version", -1), "schema_version: -1 is not"),
    "schema version true": (lambda d: d.__setitem__("schema_version", True), "got a boolean"),
    "schema version 1.0": (lambda d: d.__setitem__("schema_version", 1.0), "got a number"),
    "schema version newer": (lambda d: d.__setitem__("schema_version", 99), "newer than this"),
    "verdict rules newer": (
        lambda d: d.__setitem__("verdict_rules", 99),
        "verdict_rules: 99 is newer than this",
    ),
    "suite version not a version": (
        lambda d: d.__setitem__("suite_version", "banana"),
        "suite_version: not a",
    ),
    "suite version a number": (
        lambda d: d.__setitem__("suite_version", 1),
        "suite_version: expected a string",
    ),
    "duplicate case id": (lambda d: d["cases"].append(copy.deepcopy(_case0(d))), "are unique"),
    "empty timing samples": (
        lambda d: _first_timing(d).__setitem__("samples_ms", []),
        "samples_ms: no timing sample",
    ),
    "NaN timing sample": (
        lambda d: _first_timing(d)["samples_ms"].__setitem__(0, float("nan")),
        "samples_ms[0]: expected a finite number, got nan",
    ),
    "negative timing sample": (
        lambda d: _first_timing(d)["samples_ms"].__setitem__(0, -3.0),
        "samples_ms: a negative timing sample (-3 ms)",
    ),
    "infinite median": (lambda d: _first_timing(d).__setitem__("median_ms", float("inf")), "got inf"),
    "n disagrees with samples": (lambda d: _first_timing(d).__setitem__("n", 10**6), "but samples_ms holds"),
    "case id with ../": (
        lambda d: _case0(d).__setitem__("case_id", "../../escape[fp32-none]"),
        "not a safe case id",
    ),
    "case id with /": (lambda d: _case0(d).__setitem__("case_id", "a/b[fp32-none]"), "not a safe case id"),
    "scenario name with ..": (lambda d: _case0(d).__setitem__("scenario", ".."), "not a safe scenario name"),
    "missing field": (lambda d: _case0(d).pop("verdict"), "cases[0].verdict: missing"),
    "unknown field": (lambda d: _case0(d).__setitem__("colour", 1), "cases[0].colour: unknown field"),
    "integer beyond 64 bits": (lambda d: d.__setitem__("parent_cpu_s", 10**30), "out of range"),
    # A free-form field too: saved into the columnar copy, orjson would read it back as a float.
    "integer beyond 64 bits in args": (
        lambda d: _case0(d)["steps"][0]["args"].__setitem__("rank", -(2**63) - 1),
        "steps[0].args.rank: integer out of range",
    ),
    "top-level list": (None, "expected a table at the top"),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", sorted(DIRECTED))
def test_directed_invalid_results(name, command, tmp_path, capsys):
    edit, message = DIRECTED[name]
    data = copy.deepcopy(SEED_DATA["failing"])
    if edit is None:
        data = [data]
    else:
        edit(data)
    text = _dump(data)
    bad = tmp_path / "results.json"
    bad.write_text(text)
    good = FIXTURES / "failing" / "results.json"
    rc, out, err = run_command(command, bad, good, tmp_path, capsys)
    assert rc == 2, (out, err)
    assert f"peft-bench: error: {bad}: " in err and message in err, err
    assert "Traceback" not in err and "PASS" not in out
    assert not (tmp_path / "merged").exists() and not (tmp_path / "report").exists()  # nothing written


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("seed", SEEDS)
def test_control_the_seeds_are_valid(seed, command, tmp_path, capsys):
    good = tmp_path / "copy.json"
    good.write_text((FIXTURES / seed / "results.json").read_text())
    rc, out, err = run_command(command, good, FIXTURES / seed / "results.json", tmp_path, capsys)
    assert rc in (0, 1) and not err.startswith("peft-bench: error"), err
    assert broken_rule(good.read_text()) is None
    if command.startswith("gate"):  # the same file against itself: only its failing cases fail the gate
        failing = [c for c in SEED_DATA[seed]["cases"] if c["verdict"] in ("fail", "error", "xpass")]
        if failing:
            assert (
                rc == 1
                and f"{len(failing)} case(s) fail, error or xpass in this run ({len(failing)} as in" in out
            ), out
        else:
            assert rc == 0 and "PASS" in out


def test_control_the_oracle_sees_each_planted_rule():
    text = json.dumps(SEED_DATA["train"])
    assert broken_rule(text) is None
    for name in ("unknown verdict", "schema version 0", "duplicate case id", "case id with ../"):
        data = copy.deepcopy(SEED_DATA["train"])
        DIRECTED[name][0](data)
        assert broken_rule(json.dumps(data)) is not None, name
