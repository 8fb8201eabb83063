"""The ops registry: every scenario op, found by its name, from the modules of this package.

`OPS[name]` is the op's single instance (bench.ops.base.Op). Modules are discovered, not listed: a new op is
a new module here that defines an Op subclass with a `name`.
"""

from __future__ import annotations

import importlib
import pkgutil

from bench.ops.base import Op

_SUPPORT = {"base", "state", "hotswap"}


def _discover() -> dict[str, Op]:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _SUPPORT:
            importlib.import_module(f"{__name__}.{info.name}")
    found: dict[str, Op] = {}
    stack = list(Op.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        name = cls.__dict__.get("name")
        if name is None:
            continue  # an abstract family (e.g. the enable/disable toggle)
        if name in found:
            raise RuntimeError(f"two ops named {name!r}: {type(found[name]).__name__} and {cls.__name__}")
        found[name] = cls()
    return dict(sorted(found.items()))


OPS: dict[str, Op] = _discover()
STATE_OPS = frozenset(n for n, op in OPS.items() if op.changes_state)
# What a record naming no registered op reads as: the base Op, every flag off.
_UNREGISTERED = Op()


def op_named(name: str) -> Op:
    """The op a results record names. A name this version does not register (an older results file) reads as
    the base Op, whose flags are all off: the report treats such a step as no op in particular, as it did."""
    return OPS.get(name, _UNREGISTERED)
