"""The ops registry: every op is complete, the loader, worker and repro writer read it, nothing outside the
ops branches on an op's name, and nothing outside the hotswap strategies branches on a hotswap path's name."""

from __future__ import annotations

import dataclasses
import re

from bench.engine.hotswap import PATHS
from bench.judge.figures import is_hotswap
from bench.ops import OPS, STATE_OPS, op_named
from bench.ops.base import Op
from bench.results.measures import TimingStats, TrainStats
from bench.results.records import StepRecord
from bench.spec.schema import HOTSWAP_PATHS, CompileSetting, Step
from bench.spec.state import AdapterState
from tests.conftest import REPO

METHODS = (
    "parse",
    "check",
    "transition",
    "args",
    "apply",
    "script",
    "skip_note",
    "own_outcomes",
    "script_check",
)
# Ops whose work the executor does around them (the measured calls): they make no API call of their own.
MEASURED_BY_THE_EXECUTOR = {"forward", "generate"}


def _defined_below_op(cls: type, method: str) -> bool:
    return any(method in k.__dict__ for k in cls.__mro__ if k is not Op and issubclass(k, Op))


def test_every_registered_op_implements_every_method():
    for name, op in OPS.items():
        assert isinstance(op, Op) and op.name == name
        for method in METHODS:
            assert callable(getattr(op, method)), (name, method)
        # the methods that differ between ops must be the op's own, not the base class's placeholder
        assert _defined_below_op(type(op), "script") or name in MEASURED_BY_THE_EXECUTOR, name
        assert _defined_below_op(type(op), "apply") or name in MEASURED_BY_THE_EXECUTOR, name
        if op.changes_state:
            assert _defined_below_op(type(op), "transition"), name
        assert not _own_outcomes_missing(op), name
        assert op.call in (None, "forward", "generate"), name
        assert op.measures == (op.call is not None), name
        if op.moves_adapter:
            assert "adapter" in op.fields, name  # the bytes moved are the step's adapter's
        if op.result_field is not None:
            assert op.result_field in {f.name for f in dataclasses.fields(StepRecord)}, name


def _own_outcomes_missing(op: Op) -> bool:
    """An op that declares its own expectations decides them (own_outcomes), and only such an op does; a
    serve-like op's own come from its responses (bench.engine.serving.outcomes). Only these write script checks."""
    decides = bool(op.own_expectations) and not op.checks_responses
    own = _defined_below_op(type(op), "own_outcomes")
    return own != decides or (_defined_below_op(type(op), "script_check") and not decides)


def test_the_base_placeholders_are_visible_to_the_completeness_check():
    """Negative control: an op that forgets its script and apply fails the check above, and so does one that
    declares an expectation it never decides, or decides one it never declared."""

    class Forgetful(Op):
        name = "forgetful"
        changes_state = True
        own_expectations = frozenset({"forgotten"})

    class Undeclared(Op):
        name = "undeclared"

        def own_outcomes(self, step, result, state, params):
            return []

    assert not _defined_below_op(Forgetful, "script")
    assert not _defined_below_op(Forgetful, "apply")
    assert not _defined_below_op(Forgetful, "transition")
    assert _own_outcomes_missing(Forgetful())
    assert _own_outcomes_missing(Undeclared())
    assert "result" not in {f.name for f in dataclasses.fields(StepRecord)}  # a made-up result_field


def test_the_measured_calls_come_from_the_registry():
    assert {n for n, op in OPS.items() if op.call} == MEASURED_BY_THE_EXECUTOR
    assert OPS["generate"].call == "generate" and OPS["forward"].call == "forward"
    assert {n for n, op in OPS.items() if op.moves_adapter} == {"load_adapter", "load_pretrained"}
    assert {op.result_field for op in OPS.values()} == {None, "train", "repeat"}
    assert {n for n, op in OPS.items() if op.adds_adapter} == {"add_adapter", "load_adapter"}
    assert {n for n, op in OPS.items() if op.loads_into_model} == {"load_adapter"}
    assert {n for n, op in OPS.items() if op.compiles} == {"compile"}
    assert {n for n, op in OPS.items() if op.checks_responses} == {"serve"}


def test_an_op_name_the_registry_lacks_reads_as_no_op_in_particular():
    """A results file from an older version may name an op this one does not register: the report and the
    judge read it with every flag off, as their name checks did, instead of failing on a KeyError."""
    assert op_named("load_adapter") is OPS["load_adapter"]
    old = op_named("long_gone_op")
    assert not (old.adds_adapter or old.loads_into_model or old.compiles or old.moves_adapter)
    gone = StepRecord(
        index=1,
        op="long_gone_op",
        args={"hotswap": True},
        status="pass",
        strict=False,
        op_time_ms=1.0,
        first_call_ms=2.0,
        timing=None,
        compile=None,
        memory=None,
        output=None,
    )
    assert not is_hotswap(gone)
    assert is_hotswap(dataclasses.replace(gone, op="load_adapter"))  # control: the registered op is read


def test_only_compile_is_skipped_and_only_under_the_none_setting():
    none, enabled = CompileSetting("none"), CompileSetting("aot_eager")
    assert not none.enabled and enabled.enabled
    assert OPS["compile"].skip_note(none) == "compile setting 'none': the model stays eager"
    assert OPS["compile"].skip_note(enabled) is None
    assert all(op.skip_note(none) is None for n, op in OPS.items() if n != "compile")


def _decided(op: str, result, state: AdapterState | None = None) -> list[tuple[str, bool]]:
    outcomes = OPS[op].own_outcomes(Step(index=3, op=op), result, state or AdapterState(), {})
    assert {o.expectation for o in outcomes} <= OPS[op].own_expectations
    return [(o.expectation, o.held) for o in outcomes]


def _train_stats(before: float, after: float) -> TrainStats:
    timing = TimingStats.from_samples([1.0, 2.0])
    return TrainStats(2, timing, 3.0, 2.9, 10, 100, 40, 80, None, before, after)


def test_each_op_decides_its_own_expectations_and_each_can_fail():
    """The outcomes decide.py used to build by op name, now the ops' own: a holding and a failing case each."""
    state = AdapterState().add("a", "r8", added=False)
    assert _decided("active_adapters", ["a"], state) == [("active_adapters", True)]
    assert _decided("active_adapters", ["a", "b"], state) == [("active_adapters", False)]
    plain = {"lora_layers_left": 0, "peft_config_left": False}
    assert _decided("merge_and_unload", plain) == [("plain_model", True)]
    assert _decided("merge_and_unload", {**plain, "peft_config_left": True}) == [("plain_model", False)]
    assert _decided("train", _train_stats(3.0, 2.0)) == [("loss_decreases", True)]
    assert _decided("train", _train_stats(3.0, 3.0)) == [("loss_decreases", False)]
    assert _decided("set_adapter", None) == []


# The layers that read steps or their records: the loader's rules, the source checks, the worker, the judge,
# the report and its repro writer. They ask the op a step names, never its name.
READERS = ("scenario", "sources", "worker", "judge", "report")
# The schema declares every expectation name a scenario may write, the ops' own among them.
DECLARES_EXPECTATIONS = REPO / "bench" / "scenario" / "schema.py"
OP_NAME = re.compile(r"""(\.op|\bop)\s*([!=]=|(not\s+)?in)\s*[("'\[{]""")


def _own_name() -> re.Pattern:
    own = sorted({e for op in OPS.values() if not op.checks_responses for e in op.own_expectations})
    return re.compile(r"""["'](""" + "|".join(own) + r""")["']""")


def _name_branches(files, root=REPO) -> list[str]:
    own_name = _own_name()
    return [
        f"{p.relative_to(root)}:{i}"
        for p in files
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if OP_NAME.search(line) or (p != DECLARES_EXPECTATIONS and own_name.search(line))
    ]


def test_no_op_name_branches_outside_the_ops():
    """The loader's rules, the source checks, the worker, the judge, the report and the repro writer ask the
    op (its call, compiles, adds_adapter, skip_note, own_outcomes, script_check...), never its name; the
    pattern finds the branches that were moved into bench/ops."""
    files = sorted(p for d in READERS for p in (REPO / "bench" / d).rglob("*.py"))
    assert any(p.parts[-3:] == ("report", "repro", "script.py") for p in files)  # the walk reaches subfolders
    assert _name_branches(files) == []


def test_the_op_name_check_finds_a_planted_branch(tmp_path):
    """Negative control: the branches this replaced are found, in a file as the check reads one."""
    own_name = _own_name()
    assert OP_NAME.search('    if step.op == "active_adapters" and run.op_error is None:')
    assert OP_NAME.search('            if step.op in ("forward", "generate"):')
    assert own_name.search('    elif o.expectation == "loss_decreases":')
    planted = tmp_path / "bench" / "report" / "data.py"
    planted.parent.mkdir(parents=True)
    planted.write_text(
        'loads = [s for s in c.steps if s.op in ("load_adapter", "add_adapter") and s.memory]\n'
        'serves = [st for st in s.steps if st.op == "serve"]\n'
        "ok = [s for s in c.steps if op_named(s.op).adds_adapter]\n"
    )
    assert _name_branches([planted], root=tmp_path) == ["bench/report/data.py:1", "bench/report/data.py:2"]


def test_state_ops_come_from_the_registry():
    assert STATE_OPS == {n for n, op in OPS.items() if op.changes_state}
    assert "train" in STATE_OPS and not OPS["train"].checks_output  # no file holds trained weights
    assert OPS["forward"].checks_output and "forward" not in STATE_OPS


def test_every_hotswap_path_is_a_strategy():
    assert set(PATHS) == set(HOTSWAP_PATHS)


def test_no_path_branches_outside_the_strategies():
    pattern = re.compile(r"""(hotswap_path|\bpath)\s*[!=]=\s*["'](transformers|peft)["']""")
    offenders = [
        f"{p.relative_to(REPO)}:{i}"
        for p in (REPO / "bench").rglob("*.py")
        if p.name != "hotswap.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_every_op_is_documented_in_the_readme():
    readme = (REPO / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in OPS), [n for n in OPS if f"`{n}`" not in readme]
