"""The ops registry: every op is complete, the loader, worker and repro writer read it, and nothing outside
the hotswap strategies branches on a hotswap path's name."""

from __future__ import annotations

import re

from bench.ops import OPS, STATE_OPS
from bench.ops.base import Op
from bench.ops.hotswap import PATHS
from bench.scenario.schema import HOTSWAP_PATHS
from tests.conftest import REPO

METHODS = ("parse", "check", "transition", "args", "apply", "script")
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


def test_the_base_placeholders_are_visible_to_the_completeness_check():
    """Negative control: an op that forgets its script and apply fails the check above."""

    class Forgetful(Op):
        name = "forgetful"
        changes_state = True

    assert not _defined_below_op(Forgetful, "script")
    assert not _defined_below_op(Forgetful, "apply")
    assert not _defined_below_op(Forgetful, "transition")


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
