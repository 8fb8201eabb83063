"""The loader under mutation: every mutated scenario file is a valid Scenario or the suite's ScenarioError.

Seeds are the shipped scenario files. Structural mutations change the parsed TOML (delete, replace, retype,
add unknown keys, empty, duplicate, reorder) and go through parse_scenario; textual mutations change the
file's bytes (cut, insert TOML-ish fragments or arbitrary bytes, duplicate and swap lines) and go through
load_scenario, so syntax errors, non-UTF-8 bytes and odd tables are covered too. Anything else the loader
raises (KeyError, TypeError, OverflowError, RecursionError, ...) fails the test: a user would see a traceback.

Directed cases below pin what the fuzzing found, and the other bad inputs of the issue, one by one.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bench.errors import ScenarioError
from bench.scenario import load_scenario
from bench.scenario.loader import parse_scenario
from bench.spec.cases import expand
from bench.spec.schema import Scenario
from tests.conftest import MINIMAL, SCENARIOS

SEEDS = sorted(SCENARIOS.glob("*.toml"))
SEED_TEXT = {p.name: p.read_text(encoding="utf-8") for p in SEEDS}
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(make, *, fuzzing: bool = True) -> Scenario | None:
    """The property: a Scenario (that also expands into cases with file-safe stems) or a ScenarioError."""
    try:
        scenario = make()
    except ScenarioError as exc:
        assert str(exc)  # a message, with the file named
        if fuzzing:
            event("ScenarioError")  # hypothesis' statistics show the mix of outcomes
        return None
    if fuzzing:
        event("valid Scenario")
    assert isinstance(scenario, Scenario)
    repr(scenario)  # printable: no value a later message or report cannot format (e.g. a 5000-digit int)
    for case in expand(scenario):
        assert "/" not in case.file_stem and case.file_stem not in ("", ".", "..")
    return scenario


# ---------------------------------------------------------------------------------------------------------
# Structural mutations

# Values too big for hypothesis to print in a failure report: drawn as tokens, expanded in _mutate.
HUGE_INT, HUGE_TEXT = "<an integer of 20000 bits>", "<a comparison with a 5000-digit number>"
EXPANSIONS = {HUGE_INT: 16**5000, HUGE_TEXT: "== " + "9" * 5000}

SCALARS = (
    st.text(max_size=12)
    | st.sampled_from(["fp32", "aot_eager", "load_adapter", "forward", "== 0", ">= 1", "default", "x" * 300])
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, -1, 1, 2**31, 10**400, HUGE_INT, HUGE_TEXT])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.datetimes(timezones=st.none() | st.just(dt.UTC))
    | st.dates()
    | st.times()
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _parent(root, path):
    node = root
    for part in path[:-1]:
        node = node[part]
    return node


MUTATIONS = ("delete", "replace", "wrap", "unwrap", "empty", "unknown_key", "duplicate", "reverse", "typo")


def _expand(value):
    if isinstance(value, str):
        return EXPANSIONS.get(value, value)
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    return value


def _mutate(data: dict, path: tuple, kind: str, value, key: str) -> None:
    value = _expand(value)
    if not path:
        if kind == "unknown_key":
            data[key] = value
        return
    parent, last = _parent(data, path), path[-1]
    node = parent[last]
    if kind == "delete":
        del parent[last]
    elif kind == "replace":
        parent[last] = value
    elif kind == "wrap":
        parent[last] = [node]
    elif kind == "unwrap" and isinstance(node, list) and node:
        parent[last] = node[0]
    elif kind == "empty":
        parent[last] = type(node)() if isinstance(node, (dict, list, str)) else 0
    elif kind == "unknown_key" and isinstance(node, dict):
        node[key] = value
    elif kind == "duplicate" and isinstance(node, list) and node:
        node.append(copy.deepcopy(node[-1]))
    elif kind == "reverse" and isinstance(node, list):
        node.reverse()
    elif kind == "typo" and isinstance(node, str) and node:
        parent[last] = node[1:] + node[0]


@pytest.mark.slow
@FUZZ
@given(
    seed=st.sampled_from(SEEDS),
    mutations=st.lists(
        st.tuples(st.integers(min_value=0), st.sampled_from(MUTATIONS), VALUES, st.text(max_size=10)),
        min_size=1,
        max_size=4,
    ),
)
def test_structural_mutations(seed, mutations):
    data = tomllib.loads(SEED_TEXT[seed.name])  # a shipped file must parse (test_seeds checks it loads)
    for pick, kind, value, key in mutations:
        paths = list(_paths(data))
        _mutate(data, paths[pick % len(paths)], kind, value, key)
    _check(lambda: parse_scenario(data, f"fuzz/{seed.name}"))


# ---------------------------------------------------------------------------------------------------------
# Textual mutations

FRAGMENTS = st.sampled_from(
    [
        "[",
        "]",
        "[[",
        "]]",
        "=",
        '"',
        "'",
        "\n",
        "#",
        ",",
        "{",
        "}",
        "[[steps]]\n",
        'op = "forward"\n',
        'op = "load_adapter"\nadapter = "zz"\n',
        "[scenario]\n",
        "[matrix]\ncompile = []\n",
        "[adapters.x]\n",
        'name = "../../etc"\n',
        "rank = -3\n",
        "batch_size = 1e9\n",
        "x = 1979-05-27T07:32:00Z\n",
        "x = nan\n",
        "x = " + "[" * 3000 + "]" * 3000 + "\n",
        "x = 1" + "0" * 400 + "\n",
        '"\\u0000"',
        "\ufeff",
        "\u202e",
    ]
) | st.text(max_size=8)


@FUZZ
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(
        st.tuples(
            st.sampled_from(("cut", "insert", "bytes", "dup_line", "swap_lines")),
            st.integers(min_value=0),
            st.integers(min_value=0, max_value=40),
            FRAGMENTS,
            st.binary(min_size=1, max_size=4),
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_textual_mutations(tmp_path_factory, seed, edits):
    data = SEED_TEXT[seed.name].encode("utf-8")
    for kind, at, length, fragment, raw in edits:
        at %= len(data) + 1
        if kind == "cut":
            data = data[:at] + data[at + length :]
        elif kind == "insert":
            data = data[:at] + fragment.encode("utf-8") + data[at:]
        elif kind == "bytes":
            data = data[:at] + raw + data[at + len(raw) :]
        else:
            lines = data.split(b"\n")
            i = at % len(lines)
            j = (at + length) % len(lines)
            if kind == "dup_line":
                lines.insert(i, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            data = b"\n".join(lines)
    path = Path(tmp_path_factory.mktemp("fuzz")) / seed.name
    path.write_bytes(data)
    _check(lambda: load_scenario(path))


def test_seeds_are_the_shipped_files():
    assert len(SEEDS) >= 6  # the fuzzing starts from every shipped scenario
    for seed in SEEDS:  # and each is, unmutated, valid (a Scenario, not an error)
        assert _check(lambda seed=seed: load_scenario(seed), fuzzing=False) is not None, seed


# ---------------------------------------------------------------------------------------------------------
# Directed cases: what fuzzing found, and each kind of bad input the issue lists.


def _error(write_scenario, text: str | bytes, name: str = "scenario.toml") -> str:
    path = write_scenario("", name)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert str(path) in message  # the file is named
    return message


def _with(old: str, new: str) -> str:
    assert old in MINIMAL
    return MINIMAL.replace(old, new)


DIRECTED = [
    # found by fuzzing: tomllib recurses per nesting level
    ("deep nesting", "x = " + "[" * 5000 + "]" * 5000 + "\n" + MINIMAL, ["nested too deeply"]),
    # found by fuzzing: float() of a huge TOML integer raises OverflowError
    (
        "huge integer",
        _with("[matrix]", "[timing]\nmin_time_s = 1" + "0" * 400 + "\n[matrix]"),
        ["timing.min_time_s"],
    ),
    ("nan alpha", _with("alpha = 8", "alpha = nan"), ["adapters.a.alpha", "finite"]),
    ("inf alpha", _with("alpha = 8", "alpha = -inf"), ["adapters.a.alpha", "finite"]),
    # found by fuzzing: `$` let a trailing newline through a name
    (
        "name with newline",
        _with('name = "minimal"', 'name = "minimal\\n"'),
        ["scenario.name", "invalid name"],
    ),
    (
        "syntax error line/col",
        _with('op = "forward"', 'op = "forward'),
        ["TOML syntax error", "(at line 22, column 14)"],
    ),
    (
        "date where a number goes",
        _with("rank = 4", "rank = 2024-01-01"),
        ["adapters.a.rank", "expected an integer"],
    ),
    ("list where a table goes", "scenario = [1]\n", ["scenario", "expected a table"]),
    ("negative repeats", _with("[matrix]", "[timing]\nmin_rounds = -1\n[matrix]"), ["timing.min_rounds"]),
    ("zero tokens", _with("[matrix]", "[workload]\nseq_len = 0\n[matrix]"), ["workload.seq_len"]),
    (
        "batch far beyond memory",
        _with("[matrix]", "[workload]\nbatch_size = 4096\nseq_len = 65536\n[matrix]"),
        ["workload", "a batch of 4096 x 65536 = 268435456 tokens"],
    ),
    ("unknown top-level table", MINIMAL + "\n[extras]\nx = 1\n", ["extras", "unknown key"]),
    (
        "unknown scenario key",
        _with('model = "', 'modle = "x"\nmodel = "'),
        ["scenario.modle", "did you mean 'model'"],
    ),
    ("empty matrix axis", _with('compile = ["aot_eager"]', "compile = []"), ["matrix.compile", "empty axis"]),
    ("misspelt steps", _with("[[steps]]", "[[stepz]]"), ["steps", "required field is missing"]),
    ("bom only", "\ufeff", ["scenario", "required table is missing"]),
    ("5000-digit integer", _with("rank = 4", "rank = 1" + "0" * 5000), ["TOML value error", "digits"]),
    ("huge hex integer", _with("rank = 4", "rank = 0x" + "f" * 5000), ["adapters.a.rank", "20000 bits"]),
    ("empty file", "", ["scenario", "required table is missing"]),
    ("not utf-8", b'[scenario]\nname = "\xff\xfe"\n', ["not UTF-8"]),
    ("binary garbage", bytes(range(256)), ["not UTF-8"]),
    (
        "trust flag not a boolean",
        _with('model = "', 'trust_remote_code = "yes"\nmodel = "'),
        ["expected a boolean"],
    ),
]


@pytest.mark.parametrize(("label", "text", "fragments"), DIRECTED, ids=[d[0] for d in DIRECTED])
def test_directed_bad_input(write_scenario, label, text, fragments):
    message = _error(write_scenario, text)
    for fragment in fragments:
        assert fragment in message, f"{label}: {fragment!r} not in {message!r}"


def test_controls_load(write_scenario, tmp_path):
    """The controls for the directed cases: ordinary numbers in the same fields, a byte-order mark before a
    valid file, and the largest batch allowed all load."""
    s = load_scenario(write_scenario(_with("alpha = 8", "alpha = 12.5")))
    assert s.adapters[0].alpha == 12.5 and math.isfinite(s.timing.min_time_s)
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_scenario(bom).name == "minimal"
    big = load_scenario(
        write_scenario(_with("[matrix]", "[workload]\nbatch_size = 4096\nseq_len = 256\n[matrix]"))
    )
    assert big.workload.batch_size * big.workload.seq_len == 2**20


def test_directory_holding_only_other_files(tmp_path):
    from bench.scenario.loader import discover

    (tmp_path / "notes.txt").write_text("not a scenario")
    with pytest.raises(ScenarioError, match="holds no scenario file"):
        discover([tmp_path])
