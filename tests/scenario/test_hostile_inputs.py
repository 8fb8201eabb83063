"""Issue 16: inputs a hostile user tries (beyond test_fuzz_loader's): impossible or empty expectations,
NaN in results, hostile failure reasons in repro scripts, out-of-range options, version pairs that cannot work.

Each test names its negative control: the planted bug (or the old behaviour) the check catches.
"""

from __future__ import annotations

import copy
import json
import math
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.errors import BenchInputError, ScenarioError
from bench.results.finite import child
from bench.scenario import load_scenario
from bench.spec.counts import _COMPARATORS, COUNT_BOUND, CountBound
from tests.conftest import MINIMAL, REPO
from tests.results.test_fuzz_results import _paths

# ---------------------------------------------------------------------------------------------------------
# Impossible and always-true count expectations


def _brute_force(cmp: CountBound) -> str | None:
    held = [cmp.holds(n) for n in range(COUNT_BOUND + 1)]
    if not any(held):
        return "never"
    if all(held):
        return "always"
    return None


@settings(max_examples=300, deadline=None)
@given(op=st.sampled_from(sorted(_COMPARATORS)), value=st.integers(0, 10**9))
def test_satisfiable_agrees_with_trying_every_count(op, value):
    """300 generated comparisons; the answer is checked against every count in [0, COUNT_BOUND].
    Control: probing only {0, value} calls `> 0` impossible and `<= 998` always true (seen failing)."""
    cmp = CountBound(op, value)
    why = cmp.satisfiable()
    want = _brute_force(cmp)
    assert (why is None) == (want is None), (cmp, why)
    if want == "never":
        assert "can never hold" in why
    if want == "always":
        assert "always holds" in why


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("< 0", "never"),
        (">= 1000", "never"),
        ("> 999", "never"),
        ("== 1000", "never"),
        (">= 0", "always"),
        ("!= 1000", "always"),
        ("<= 999", "always"),
        ("== 0", None),
        (">= 1", None),
        ("!= 0", None),
        ("<= 998", None),
    ],
)
def test_directed_comparisons(text, verdict):
    assert _brute_force(CountBound.parse(text)) == verdict
    assert (CountBound.parse(text).satisfiable() is None) == (verdict is None)


@pytest.mark.parametrize("key", ["recompiles", "graph_breaks"])
@pytest.mark.parametrize("text", ["< 0", ">= 1000", ">= 0"])
def test_loader_refuses_impossible_or_empty_step_expectations(write_scenario, key, text):
    scenario = MINIMAL.rstrip() + f'\nexpect = {{ {key} = "{text}" }}\n'
    with pytest.raises(ScenarioError) as info:
        load_scenario(write_scenario(scenario))
    msg = str(info.value)
    assert f"step 3 (forward).expect.{key}" in msg or f"expect.{key}" in msg, msg
    assert "never hold" in msg or "always holds" in msg, msg


@pytest.mark.parametrize("key", ["total_recompiles", "total_graph_breaks"])
def test_loader_refuses_impossible_case_expectations(write_scenario, key):
    with pytest.raises(ScenarioError) as info:
        load_scenario(write_scenario(MINIMAL + f'\n[expect]\n{key} = "< 0"\n'))
    assert f"expect.{key}" in str(info.value) and "never hold" in str(info.value)


def test_a_possible_expectation_still_loads(write_scenario):
    """Control for the three tests above: the same file with `== 0` loads."""
    s = load_scenario(write_scenario(MINIMAL.rstrip() + '\nexpect = { recompiles = "== 0" }\n'))
    assert str(s.steps[2].expect.recompiles) == "== 0"


@pytest.mark.parametrize("key", ["recompiles", "graph_breaks"])
def test_count_expectation_before_compile_is_refused(write_scenario, key):
    """Step 1 (load_adapter) runs before step 2 (compile): no count can exist there."""
    text = MINIMAL.replace('adapter = "a"\n', f'adapter = "a"\nexpect = {{ {key} = "== 0" }}\n', 1)
    with pytest.raises(ScenarioError) as info:
        load_scenario(write_scenario(text))
    msg = str(info.value)
    assert "step 1 (load_adapter)" in msg and f"expect.{key} on a step before the model is compiled" in msg


def test_count_expectation_without_a_compile_step_is_refused(write_scenario):
    text = (
        MINIMAL.replace('[[steps]]\nop = "compile"\n', "").rstrip() + '\nexpect = { recompiles = "== 0" }\n'
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(write_scenario(text))
    assert "the scenario has no compile step" in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# results.json never holds NaN or Infinity


def _at(data, path):
    for k in path:
        data = data[k]
    return data


def _float_paths(data):
    return (p for p in _paths(data) if isinstance(_at(data, p), float))


def _path_key(path) -> str:
    key = ""
    for k in path:
        key = child(key, k)
    return key


def _strict_loads(text: str):
    def refuse(word):
        raise ValueError(f"bare {word} in JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def fixture_results_dict():
    from bench.results.store import load
    from bench.spec.codec import to_dict

    return to_dict(load(REPO / "tests" / "fixtures" / "results" / "failing"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_non_finite_values_become_null_with_a_note_and_round_trip(fixture_results_dict, tmp_path, data):
    """60 results files, each with 1-5 float fields (of the fixture's real run) set to NaN, inf or -inf.
    Control: with allow_nan=True and no replacement (the old atomic.write_json) the strict parse fails."""
    from bench.results.atomic import write_json
    from bench.results.store import load, save
    from bench.spec.codec import to_dict

    doc = copy.deepcopy(fixture_results_dict)
    paths = list(_float_paths(doc))
    chosen = data.draw(st.lists(st.sampled_from(paths), min_size=1, max_size=5, unique=True))
    planted = {}
    for path in chosen:
        value = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        _at(doc, path[:-1])[path[-1]] = value
        planted[_path_key(path)] = value
    out = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    write_json(out / "results.json", doc)
    text = (out / "results.json").read_text()
    strict = _strict_loads(text)  # raises on a bare NaN / Infinity
    notes = strict["non_finite"]
    assert len(notes) == len(chosen)
    for path in chosen:
        assert _at(strict, path) is None
    # the note names each value's path and what it was
    for key, v in planted.items():
        assert notes[key] == ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")), (key, notes)
    # Reading back: a null where the field may be null is read; where a number is required the file is
    # refused, saying what the value was (the commands compute with those numbers).
    try:
        loaded = load(out)
    except BenchInputError as exc:
        assert exc.field in planted and "written as null, see non_finite" in exc.detail, exc
        return
    assert loaded.non_finite == notes
    # Saving again: the same document (save writes one case per line: bench.results.writing), and saving
    # what that wrote gives the same bytes.
    again = tmp_path / f"again{len(list(tmp_path.iterdir()))}"
    save(again, loaded)
    assert json.loads((again / "results.json").read_text()) == json.loads(text)
    assert to_dict(load(again)) == to_dict(loaded)
    twice = tmp_path / f"twice{len(list(tmp_path.iterdir()))}"
    save(twice, load(again))
    assert (twice / "results.json").read_text() == (again / "results.json").read_text()


# Fields a record allows to be null (bench/results/records.py): a noted NaN there is read back as null.
NULLABLE_FLOATS = ("max_abs_diff", "max_rel_diff", "op_time_ms", "first_call_ms", "copy_floor_ms", "wall_s")


def test_commands_read_noted_nulls_where_a_field_may_be_null(fixture_results_dict, tmp_path, capsys):
    """Every nullable float of the fixture run (78 values) NaN or infinite: written, read back, saved again
    byte for byte, and report, gate (either side) and compare run on it (exit 0 or 1, no traceback)."""
    from bench.cli.main import main
    from bench.results.atomic import write_json
    from bench.results.store import load, save

    doc = copy.deepcopy(fixture_results_dict)
    planted = [p for p in _float_paths(doc) if p[-1] in NULLABLE_FLOATS]
    for i, path in enumerate(planted):
        _at(doc, path[:-1])[path[-1]] = (math.nan, math.inf, -math.inf)[i % 3]
    out = tmp_path / "run"
    write_json(out / "results.json", doc)
    loaded = load(out)
    assert len(loaded.non_finite) == len(planted) > 20
    save(tmp_path / "again", loaded)
    again = (tmp_path / "again" / "results.json").read_text()
    assert json.loads(again) == json.loads((out / "results.json").read_text())
    save(tmp_path / "twice", load(tmp_path / "again"))
    assert (tmp_path / "twice" / "results.json").read_text() == again
    fixture = str(REPO / "tests" / "fixtures" / "results" / "failing")
    for args in (
        ["report", str(out), "--out", str(tmp_path / "report")],
        ["gate", str(out), "--baseline", fixture],
        ["gate", fixture, "--baseline", str(out)],
        ["compare", str(out), fixture],
    ):
        assert main(args) in (0, 1), (args, capsys.readouterr().err)


def test_a_null_where_a_number_is_required_is_refused(fixture_results_dict, tmp_path):
    """A timing median that was infinite: refused, saying it was inf. Controls: the same null without its
    note is refused as a plain null, and a note that is not nan / inf / -inf is refused by name."""
    from bench.results.atomic import write_json
    from bench.results.store import load

    doc = copy.deepcopy(fixture_results_dict)
    path = next(p for p in _float_paths(doc) if p[-1] == "median_ms")
    _at(doc, path[:-1])[path[-1]] = math.inf
    write_json(tmp_path / "results.json", doc)
    with pytest.raises(BenchInputError, match=r"median_ms: was inf \(written as null, see non_finite\)"):
        load(tmp_path)
    data = json.loads((tmp_path / "results.json").read_text())
    del data["non_finite"]
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(BenchInputError, match="median_ms: expected a number, got null"):
        load(tmp_path)
    data["non_finite"] = {_path_key(path): "huge"}
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(BenchInputError, match="median_ms: expected a number, got null"):
        load(tmp_path)
    _at(data, path[:-1])[path[-1]] = 1.0
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(BenchInputError, match="non_finite.* unknown non-finite value 'huge'"):
        load(tmp_path)


def test_old_writer_is_caught_by_the_strict_parse():
    """The control for the test above: what Python's json writes by default is not JSON."""
    with pytest.raises(ValueError, match="bare NaN"):
        _strict_loads(json.dumps({"x": math.nan}))


# ---------------------------------------------------------------------------------------------------------
# Repro scripts compile whatever the results file says

HOSTILE_REASONS = [
    r"C:\Users\me\new\x00file \N{bad} \u12",
    'three quotes """ and one " at the end"',
    "\\",
    "ends with a backslash \\",
    "NUL \x00, line separator \u2028, surrogate \ud800, tab\tand newline\n",
    "{braces} {{doubled}} f'{x}' '''",
]


def _with_hostile_text(results, reason: str):
    from dataclasses import replace

    def step(s):
        outs = tuple(replace(o, actual=reason) if o.status == "fail" else o for o in s.outcomes)
        return replace(s, outcomes=outs)

    cases = tuple(
        replace(c, reason=reason, steps=tuple(step(s) for s in c.steps))
        if c.verdict in ("fail", "error", "xpass")
        else c
        for c in results.cases
    )
    return replace(results, cases=cases)


def _compile_all(results, out):
    from bench.report.repro import write_repros

    written = write_repros(results, out, roots=(REPO,))
    scripts = [r for r in written.values() if r.path]
    assert scripts, written
    for r in scripts:
        source = (out / r.path).read_text(encoding="utf-8")
        with warnings.catch_warnings():
            # An invalid escape sequence is only a warning to compile(); here it fails the test.
            warnings.simplefilter("error")
            compile(source, r.path, "exec")  # a SyntaxError (or ValueError for a NUL) fails the test
    return scripts


@pytest.fixture(scope="module")
def failing_results():
    from bench.results.store import load

    return load(REPO / "tests" / "fixtures" / "results" / "failing")


@pytest.mark.parametrize("reason", HOSTILE_REASONS)
def test_repro_scripts_compile_with_directed_hostile_reasons(failing_results, tmp_path, reason):
    """6 reasons, each in every failing case of the fixture run (3 scripts each).
    Control: the old header (reason inside the docstring unescaped) gives a SyntaxError on the first."""
    scripts = _compile_all(_with_hostile_text(failing_results, reason), tmp_path)
    source = (tmp_path / scripts[0].path).read_text(encoding="utf-8")
    namespace: dict = {}
    exec(compile(source.split("\nimport", 1)[0], "doc", "exec"), namespace)  # only the docstring
    assert " ".join(reason.split()) in namespace["__doc__"].replace("\n", " ")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reason=st.text(min_size=1, max_size=300))
def test_repro_scripts_compile_with_generated_reasons(failing_results, tmp_path_factory, reason):
    """100 generated reasons (any Unicode text: quotes, backslashes, control characters, surrogates)."""
    _compile_all(_with_hostile_text(failing_results, reason), tmp_path_factory.mktemp("repro"))


@pytest.mark.parametrize(
    ("expectation", "expected"),
    [
        ("adapter_effect", "> 0.001"),
        ("active_adapters", "['x']"),
        ("raises", "ValueError"),
        ("succeeds", "true"),
    ],
)
def test_repro_scripts_compile_for_each_checked_expectation(failing_results, tmp_path, expectation, expected):
    """Each expectation the writer checks, on the fixture's failing step, with a hostile reason. Control: the
    old `adapter {step.adapter!r}` inside an f-string's single quotes was a SyntaxError (adapter_effect)."""
    from dataclasses import replace

    def step(s):
        outs = tuple(
            replace(o, expectation=expectation, expected=expected) if o.status == "fail" else o
            for o in s.outcomes
        )
        return replace(s, outcomes=outs)

    cases = tuple(replace(c, steps=tuple(step(s) for s in c.steps)) for c in failing_results.cases)
    _compile_all(_with_hostile_text(replace(failing_results, cases=cases), HOSTILE_REASONS[0]), tmp_path)
