"""TOML scenario file -> validated Scenario. Everything is checked before anything runs.

Every error is a ScenarioError naming the file, the place (step number, field) and what is allowed.
Nothing in a scenario file is evaluated as code: values are read as data and checked against fixed tables.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from pathlib import Path
from typing import Any

from bench.errors import ScenarioError
from bench.scenario.files import check_scenario_file
from bench.scenario.schema import (
    BACKENDS,
    COMPILE_MODES,
    COMPUTE_DTYPES,
    EXPECTATIONS,
    HOTSWAP_PATHS,
    MATRIX_AXES,
    OPS,
    PRECISIONS,
    REPEAT_MODES,
    WORKLOAD_KINDS,
    AdapterSpec,
    Comparison,
    CompileSetting,
    Expectations,
    KnownFailure,
    Matrix,
    QuantOptions,
    Scenario,
    ScenarioExpectations,
    Step,
    TimingPolicy,
    Workload,
)

# Names become file and folder names: keep them to a safe alphabet so they never escape the output folder.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # fullmatch: `$` would let "x\n" through
# Limits that catch typos before they cost an hour (or all memory) of a CI machine.
MAX_BATCH_SIZE = 4096
MAX_SEQ_LEN = 65536
MAX_NEW_TOKENS = 4096
# batch_size x (seq_len + new_tokens): 2**20 tokens is a batch of 256 sequences of 4096 tokens; beyond it the
# activations alone outgrow any single accelerator, so it is a typo, not a benchmark.
MAX_BATCH_TOKENS = 2**20
MAX_RANK = 4096
MAX_COUNT = 10**9  # a recompile or graph-break count in an expectation
_MISSING = object()


class _Table:
    """A TOML table being read: remembers where it is for error messages and which keys were used."""

    def __init__(self, data: Any, where: str, source: str):
        if not isinstance(data, dict):
            raise ScenarioError(
                f"expected a table, got {_type_name(data)}", source=source, field=where or None
            )
        self.data = data
        self.where = where
        self.source = source
        self.used: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str | None, message: str) -> ScenarioError:
        return ScenarioError(
            message, source=self.source, field=self.path(key) if key else (self.where or None)
        )

    def get(self, key: str, types: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise self.error(key, "required field is missing")
            return default
        value = self.data[key]
        types = types if isinstance(types, tuple) else (types,)
        # bool is an int in Python; a TOML `true` must not pass as a count.
        if isinstance(value, bool) and bool not in types:
            raise self.error(key, f"expected {_names(types)}, got a boolean ({value!r})")
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:  # TOML integers are unbounded here; float() of 10**400 overflows
                raise self.error(key, f"number too large: {_short(value)}") from None
        if not isinstance(value, types):
            raise self.error(key, f"expected {_names(types)}, got {_type_name(value)} ({_short(value)})")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(key, f"expected a finite number, got {value}")
        return value

    def int_in(self, key: str, default: Any, lo: int, hi: int) -> int:
        value = self.get(key, int, default)
        if value is not None and not lo <= value <= hi:
            raise self.error(key, f"must be between {lo} and {hi}, got {_short(value)}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _MISSING) -> str:
        value = self.get(key, str, default)
        if value is not None and value not in choices:
            raise self.error(
                key, f"unknown value {value!r}{_did_you_mean(value, choices)}; allowed: {', '.join(choices)}"
            )
        return value

    def str_list(self, key: str, default: Any = _MISSING) -> tuple[str, ...]:
        value = self.get(key, (list, str), default)
        if isinstance(value, str):
            value = [value]
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{key}[{i}]", f"expected a string, got {_type_name(item)}")
        return tuple(value)

    def sub(self, key: str, default: Any = _MISSING) -> _Table:
        self.used.add(key)
        value = self.data.get(key, {} if default is not _MISSING else _MISSING)
        if value is _MISSING:
            raise self.error(key, "required table is missing")
        return _Table(value, self.path(key), self.source)

    def finish(self) -> None:
        for key in self.data:
            if key not in self.used:
                raise self.error(key, f"unknown key{_did_you_mean(key, tuple(self.used))}")


def _names(types: tuple[type, ...]) -> str:
    return " or ".join(
        {
            bool: "a boolean",
            int: "an integer",
            float: "a number",
            str: "a string",
            list: "a list",
            dict: "a table",
        }.get(t, t.__name__)
        for t in types
    )


def _type_name(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    """A value for an error message: bounded, and safe for integers too long for repr (Python refuses to
    print an int of more than 4300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except ValueError:  # a list or table holding such an integer
        return f"{_type_name(value)} too large to print"
    return text if len(text) <= 80 else text[:77] + "..."


def _did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _name(table: _Table, key: str, value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise table.error(
            key,
            f"invalid name {value!r}: use letters, digits, '_', '.', '-' (at most 64, not starting with '.')",
        )
    return value


# ---------------------------------------------------------------------------------------------------------
# Reading


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate one scenario file."""
    path = Path(path)
    source = str(path)
    check_scenario_file(path)  # regular files only, size-limited: a FIFO or /dev/zero never gets read
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ScenarioError("no such file", source=source) from None
    except IsADirectoryError:
        raise ScenarioError("is a directory, expected a .toml file", source=source) from None
    except OSError as exc:
        raise ScenarioError(f"cannot read: {exc.strerror}", source=source) from None
    try:
        text = raw.decode("utf-8-sig")  # a UTF-8 byte-order mark, as some editors write, is not an error
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            f"not UTF-8 text (byte {exc.start}): scenario files are UTF-8 TOML", source=source
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"TOML syntax error: {exc}", source=source) from None
    except ValueError as exc:  # tomllib raises it for an integer literal of more than 4300 digits
        raise ScenarioError(f"TOML value error: {' '.join(str(exc).split())[:120]}", source=source) from None
    except RecursionError:  # tomllib recurses once per level of [ and {
        raise ScenarioError("TOML arrays or tables nested too deeply", source=source) from None
    return parse_scenario(data, source)


def parse_scenario(data: dict[str, Any], source: str) -> Scenario:
    top = _Table(data, "", source)
    head = top.sub("scenario")
    name = _name(head, "name", head.get("name", str))
    description = head.get("description", str, "")
    model = head.get("model", str)
    if not model.strip():
        raise head.error("model", "must not be empty")
    timeout_s = head.get("timeout_s", float, 600.0)
    if not 1 <= timeout_s <= 24 * 3600:
        raise head.error("timeout_s", f"must be between 1 and 86400 seconds, got {timeout_s}")
    tags = head.str_list("tags", ())
    default_path = head.choice("hotswap_path", HOTSWAP_PATHS, None)
    trust_remote_code = head.get("trust_remote_code", bool, False)
    allow_pickle = head.get("allow_pickle", bool, False)
    head.finish()

    matrix = _matrix(top.sub("matrix", {}), default_path)
    workload = _workload(top.sub("workload", {}))
    timing = _timing(top.sub("timing", {}))
    adapters = _adapters(top.sub("adapters", {}))
    steps_raw = top.get("steps", list)
    if not steps_raw:
        raise top.error("steps", "a scenario needs at least one step")
    saved: set[str] = set()
    steps = tuple(
        _step(_Table(s, f"steps[{i}]", source), i, adapters, saved) for i, s in enumerate(steps_raw, 1)
    )
    expect = _scenario_expect(top.sub("expect", {}))
    quant = _quantization(top.sub("quantization", {}))
    top.finish()

    scenario = Scenario(
        name=name,
        source_file=source,
        model=model,
        matrix=matrix,
        workload=workload,
        timing=timing,
        adapters=tuple(adapters.values()),
        steps=steps,
        expect=expect,
        quantization=quant,
        description=description,
        timeout_s=timeout_s,
        tags=tags,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
    )
    _check_order(scenario)
    return scenario


def _matrix(t: _Table, default_path: str | None) -> Matrix:
    precision = t.str_list("precision", ("fp32",))
    for i, p in enumerate(precision):
        if p not in PRECISIONS:
            raise t.error(
                f"precision[{i}]",
                f"unknown precision {p!r}{_did_you_mean(p, PRECISIONS)}; allowed: {', '.join(PRECISIONS)}",
            )
    raw_compile = t.get("compile", (list, str, dict), ["aot_eager"])
    if not isinstance(raw_compile, list):
        raw_compile = [raw_compile]
    compile_settings = tuple(_compile_setting(t, i, c) for i, c in enumerate(raw_compile))
    paths = t.str_list("hotswap_path", (default_path,) if default_path else ("transformers",))
    if "hotswap_path" in t.data and default_path:
        raise t.error("hotswap_path", "set either scenario.hotswap_path or matrix.hotswap_path, not both")
    for i, p in enumerate(paths):
        if p not in HOTSWAP_PATHS:
            raise t.error(
                f"hotswap_path[{i}]",
                f"unknown hotswap path {p!r}{_did_you_mean(p, HOTSWAP_PATHS)}; allowed: {', '.join(HOTSWAP_PATHS)}",
            )
    t.finish()
    for axis, values in (("precision", precision), ("compile", compile_settings), ("hotswap_path", paths)):
        if not values:
            raise t.error(axis, "empty axis: the matrix would have no case")
        labels = [v.label if isinstance(v, CompileSetting) else v for v in values]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise t.error(axis, f"duplicate value(s): {', '.join(dupes)}")
    return Matrix(precision=precision, compile=compile_settings, hotswap_path=paths)


def _compile_setting(t: _Table, i: int, value: Any) -> CompileSetting:
    where = f"compile[{i}]"
    if isinstance(value, str):
        if value not in BACKENDS:
            raise t.error(
                where,
                f"unknown backend {value!r}{_did_you_mean(value, BACKENDS)}; allowed: {', '.join(BACKENDS)}",
            )
        return CompileSetting(backend=value)
    sub = _Table(value, t.path(where), t.source)
    backend = sub.choice("backend", BACKENDS)
    mode = sub.choice("mode", COMPILE_MODES, None)
    fullgraph = sub.get("fullgraph", bool, False)
    dynamic = sub.get("dynamic", bool, None)
    sub.finish()
    if backend != "inductor" and mode not in (None, "default"):
        raise sub.error("mode", f"mode {mode!r} needs backend 'inductor'")
    return CompileSetting(backend=backend, mode=mode, fullgraph=fullgraph, dynamic=dynamic)


def _quantization(t: _Table) -> QuantOptions:
    q = QuantOptions(
        compute_dtype=t.choice("compute_dtype", COMPUTE_DTYPES, "bf16"),
        double_quant=t.get("double_quant", bool, False),
    )
    t.finish()
    return q


def _workload(t: _Table) -> Workload:
    w = Workload(
        kind=t.choice("kind", WORKLOAD_KINDS, "forward"),
        batch_size=t.int_in("batch_size", 2, 1, MAX_BATCH_SIZE),
        seq_len=t.int_in("seq_len", 16, 1, MAX_SEQ_LEN),
        new_tokens=t.int_in("new_tokens", 8, 1, MAX_NEW_TOKENS),
        seed=t.int_in("seed", 0, 0, 2**31 - 1),
    )
    t.finish()
    length = w.seq_len + (w.new_tokens if w.kind == "generate" else 0)
    if w.batch_size * length > MAX_BATCH_TOKENS:
        raise t.error(
            None,
            f"a batch of {w.batch_size} x {length} = {w.batch_size * length} tokens is more than "
            f"{MAX_BATCH_TOKENS}: far beyond any device's memory (a typo?)",
        )
    return w


def _timing(t: _Table) -> TimingPolicy:
    warmup = t.int_in("warmup", 3, 0, 10_000)
    min_rounds = t.int_in("min_rounds", 20, 1, 1_000_000)
    max_rounds = t.int_in("max_rounds", 10_000, 1, 1_000_000)
    min_time_s = t.get("min_time_s", float, 0.1)
    if not 0 <= min_time_s <= 3600:
        raise t.error("min_time_s", f"must be between 0 and 3600, got {min_time_s}")
    if max_rounds < min_rounds:
        raise t.error("max_rounds", f"must be at least min_rounds ({min_rounds}), got {max_rounds}")
    t.finish()
    return TimingPolicy(warmup=warmup, min_rounds=min_rounds, min_time_s=min_time_s, max_rounds=max_rounds)


def _adapters(t: _Table) -> dict[str, AdapterSpec]:
    out: dict[str, AdapterSpec] = {}
    for key in t.data:
        t.used.add(key)
        _name(t, key, key)
        a = t.sub(key)
        path = a.get("path", str, None)
        if path is not None:
            a.finish()  # a saved adapter carries its own config: no spec fields beside the path
            out[key] = AdapterSpec(key=key, path=path)
            continue
        rank = a.int_in("rank", 8, 1, MAX_RANK)
        alpha = a.get("alpha", float, float(2 * rank))
        targets = a.str_list("targets", ("q_proj", "v_proj"))
        if not targets:
            raise a.error("targets", "needs at least one target module")
        rank_pattern = _pattern(a, "rank_pattern", int)
        alpha_pattern = _pattern(a, "alpha_pattern", float)
        for k, r in rank_pattern:
            if not 1 <= r <= MAX_RANK:
                raise a.error(f"rank_pattern.{k}", f"must be between 1 and {MAX_RANK}, got {_short(r)}")
        spec = AdapterSpec(
            key=key,
            rank=rank,
            alpha=alpha,
            targets=targets,
            seed=a.int_in("seed", 0, 0, 2**31 - 1),
            rank_pattern=rank_pattern,
            alpha_pattern=alpha_pattern,
            init_std=a.get("init_std", float, 0.05),
            lora_dropout=a.get("lora_dropout", float, 0.0),
            modules_to_save=a.str_list("modules_to_save", ()),
        )
        if not 0 < spec.init_std <= 10:
            raise a.error("init_std", f"must be in (0, 10], got {spec.init_std}")
        if not 0 <= spec.lora_dropout < 1:
            raise a.error("lora_dropout", f"must be in [0, 1), got {spec.lora_dropout}")
        a.finish()
        out[key] = spec
    return out


def _pattern(t: _Table, key: str, kind: type) -> tuple[tuple[str, Any], ...]:
    sub = t.sub(key, {})
    items = []
    for k in sub.data:
        items.append((k, sub.get(k, kind)))
    sub.finish()
    return tuple(sorted(items))


_STEP_FIELDS = {
    "add_adapter": {"adapter", "name"},
    "load_adapter": {"adapter", "name", "hotswap"},
    "set_adapter": {"names"},
    "enable_adapters": set(),
    "disable_adapters": set(),
    "delete_adapter": {"name"},
    "enable_hotswap": {"target_rank"},
    "compile": set(),
    "forward": set(),
    "generate": set(),
    "load_pretrained": {"adapter"},
    "repeat_load": {"adapters", "count", "mode", "name"},
    "train": {"steps", "learning_rate", "full"},
    "save_adapter": {"as"},
    "active_adapters": set(),
}
_COMMON_STEP_FIELDS = {"op", "expect", "known_failure", "known_failures", "note"}


def _step(t: _Table, index: int, adapters: dict[str, AdapterSpec], saved: set[str] | None = None) -> Step:
    """One [[steps]] entry. `saved` collects the keys earlier save_adapter steps declared (`as`): later steps
    may use them like adapters defined in [adapters]."""
    saved = set() if saved is None else saved
    t.where = f"step {index}"
    op = t.get("op", str)
    if op not in OPS:
        raise t.error(
            "op",
            f"unknown op {op!r}{_did_you_mean(op, tuple(sorted(OPS)))}; allowed: {', '.join(sorted(OPS))}",
        )
    label = f"step {index} ({op})"
    t.where = label
    allowed = _STEP_FIELDS[op] | _COMMON_STEP_FIELDS
    for key in t.data:
        if key not in allowed:
            raise t.error(
                key,
                f"unknown key for op {op!r}{_did_you_mean(key, tuple(sorted(allowed)))}; allowed: {', '.join(sorted(allowed))}",
            )
    adapter = t.get("adapter", str, None) if "adapter" in _STEP_FIELDS[op] else None
    if "adapter" in _STEP_FIELDS[op]:
        if adapter is None:
            raise t.error("adapter", "required field is missing: which adapter (a key of [adapters])")
        if adapter not in adapters and adapter not in saved:
            known = tuple(adapters) + tuple(sorted(saved))
            raise t.error(
                "adapter",
                f"adapter {adapter!r} is not defined in [adapters]{_did_you_mean(adapter, known)}"
                + (f"; defined: {', '.join(known)}" if known else "; none are defined"),
            )
    name = t.get("name", str, None)
    if name is not None:
        _name(t, "name", name)
    if op in ("add_adapter", "load_adapter") and name is None:
        name = adapter
    if op == "delete_adapter" and name is None:
        raise t.error("name", "required field is missing: which adapter_name to delete")
    names = t.str_list("names", ()) if op == "set_adapter" else ()
    if op == "set_adapter" and not names:
        raise t.error("names", "required: the adapter name(s) to activate")
    hotswap = t.get("hotswap", bool, False)
    target_rank = t.int_in("target_rank", None, 1, MAX_RANK) if op == "enable_hotswap" else None
    if op == "enable_hotswap" and target_rank is None:
        raise t.error("target_rank", "required: the largest rank any swapped-in adapter will have")
    t.get("note", str, "")
    extra = _op_fields(t, op, adapters, saved)
    expect = _expectations(t.sub("expect", {}))
    kf = []
    if "known_failure" in t.data and "known_failures" in t.data:
        raise t.error("known_failure", "use either known_failure or known_failures")
    if "known_failure" in t.data:
        kf.append(_known_failure(t.sub("known_failure")))
    for i, item in enumerate(t.get("known_failures", list, [])):
        kf.append(_known_failure(_Table(item, t.path(f"known_failures[{i}]"), t.source)))
    t.finish()
    return Step(
        index=index,
        op=op,
        adapter=adapter,
        name=name,
        names=names,
        hotswap=hotswap,
        target_rank=target_rank,
        expect=expect,
        known_failures=tuple(kf),
        **extra,
    )


def _op_fields(t: _Table, op: str, adapters: dict[str, AdapterSpec], saved: set[str]) -> dict[str, Any]:
    """Fields of the ops beyond the adapter API basics: train, save_adapter, repeat_load."""
    if op == "train":
        lr = t.get("learning_rate", float, 1e-3)
        if not 0 < lr <= 10:
            raise t.error("learning_rate", f"must be in (0, 10], got {lr}")
        return {
            "train_steps": t.int_in("steps", 10, 1, 100_000),
            "learning_rate": lr,
            "full": t.get("full", bool, False),
        }
    if op == "save_adapter":
        key = _name(t, "as", t.get("as", str))
        if key in adapters or key in saved:
            raise t.error("as", f"adapter key {key!r} is already defined; pick a new one")
        saved.add(key)
        return {"save_as": key}
    if op == "repeat_load":
        cycle = t.str_list("adapters")
        if not cycle:
            raise t.error("adapters", "needs at least one adapter key")
        for i, key in enumerate(cycle):
            if key not in adapters and key not in saved:
                raise t.error(f"adapters[{i}]", f"adapter {key!r} is not defined in [adapters]")
        mode = t.choice("mode", REPEAT_MODES)
        return {"cycle": cycle, "mode": mode, "count": t.int_in("count", 5, 1, 1000)}
    return {}


def _expectations(t: _Table) -> Expectations:
    def comparison(key: str) -> Comparison | None:
        raw = t.get(key, (str, int), None)
        if raw is None:
            return None
        if isinstance(raw, int) and not abs(raw) <= MAX_COUNT:
            raise t.error(key, f"must be between -{MAX_COUNT} and {MAX_COUNT}, got {_short(raw)}")
        try:
            return Comparison.parse(raw)
        except ValueError as exc:
            raise t.error(key, str(exc)) from None

    e = Expectations(
        recompiles=comparison("recompiles"),
        graph_breaks=comparison("graph_breaks"),
        matches_reference=t.get("matches_reference", bool, None),
        raises=t.get("raises", str, None),
    )
    if e.raises is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", e.raises):
        raise t.error("raises", f"expected an exception class name such as 'ValueError', got {e.raises!r}")
    t.finish()
    return e


def _known_failure(t: _Table) -> KnownFailure:
    expectation = t.choice("expectation", EXPECTATIONS)
    reason = t.get("reason", str)
    if not reason.strip():
        raise t.error("reason", "must say why (an upstream issue, a version)")
    when_t = t.sub("when", {})
    when = []
    for axis in when_t.data:
        if axis not in MATRIX_AXES:
            raise when_t.error(
                axis,
                f"unknown matrix axis{_did_you_mean(axis, MATRIX_AXES)}; allowed: {', '.join(MATRIX_AXES)}",
            )
        when.append((axis, when_t.str_list(axis)))
    when_t.finish()
    t.finish()
    return KnownFailure(expectation=expectation, reason=reason, when=tuple(when))


def _scenario_expect(t: _Table) -> ScenarioExpectations:
    def comparison(key: str) -> Comparison | None:
        raw = t.get(key, (str, int), None)
        if raw is None:
            return None
        if isinstance(raw, int) and not abs(raw) <= MAX_COUNT:
            raise t.error(key, f"must be between -{MAX_COUNT} and {MAX_COUNT}, got {_short(raw)}")
        try:
            return Comparison.parse(raw)
        except ValueError as exc:
            raise t.error(key, str(exc)) from None

    total_recompiles = comparison("total_recompiles")
    total_graph_breaks = comparison("total_graph_breaks")
    kf = tuple(
        _known_failure(_Table(item, t.path(f"known_failures[{i}]"), t.source))
        for i, item in enumerate(t.get("known_failures", list, []))
    )
    for k in kf:
        if k.expectation not in ("recompiles", "graph_breaks"):
            raise t.error(
                "known_failures",
                "scenario-level known failures apply to 'recompiles' or 'graph_breaks' (the totals)",
            )
    t.finish()
    return ScenarioExpectations(
        total_recompiles=total_recompiles, total_graph_breaks=total_graph_breaks, known_failures=kf
    )


# ---------------------------------------------------------------------------------------------------------
# Step order: walk the steps as the model would see them and refuse orders that cannot work.


def _check_order(s: Scenario) -> None:
    slots: set[str] = set()
    compiled = hotswap_enabled = any_loaded = False
    defined = {a.key for a in s.adapters}

    def fail(step: Step, message: str) -> ScenarioError:
        return ScenarioError(message, source=s.source_file, field=step.label)

    for step in s.steps:
        expects_error = step.expect.raises is not None
        if step.op == "compile":
            if compiled:
                raise fail(step, "the model is already compiled (one compile step per scenario)")
            if not any(c.enabled for c in s.matrix.compile):
                raise fail(step, "a compile step needs a compile backend in matrix.compile other than 'none'")
            compiled = True
        elif step.op == "enable_hotswap":
            if hotswap_enabled:
                raise fail(step, "hotswap is already enabled")
            if any_loaded and not expects_error:
                raise fail(
                    step,
                    "enable_hotswap must come before the first adapter is loaded "
                    "(transformers raises RuntimeError after it); set expect.raises to test that",
                )
            if compiled and not expects_error:
                raise fail(step, "enable_hotswap must come before compile")
            hotswap_enabled = not expects_error
        elif step.op in ("add_adapter", "load_adapter"):
            if step.hotswap:
                if step.op == "add_adapter":
                    raise fail(step, "hotswap applies to load_adapter only")
                if step.name not in slots and not expects_error:
                    raise fail(
                        step,
                        f"hotswap into {step.name!r}, but no adapter of that name is loaded at this point "
                        f"(loaded: {', '.join(sorted(slots)) or 'none'})",
                    )
                if step.adapter in defined and s.adapter(step.adapter).modules_to_save:
                    raise fail(
                        step, "hotswap of an adapter with modules_to_save is not supported by either path"
                    )
            elif step.name in slots and not expects_error:
                raise fail(
                    step,
                    f"an adapter named {step.name!r} is already loaded; use hotswap = true, another "
                    "name, or expect.raises = 'ValueError'",
                )
            if not expects_error:
                slots.add(step.name)
                any_loaded = True
        elif step.op == "load_pretrained":
            if compiled:
                raise fail(step, "load_pretrained makes a new model: it must come before compile")
            slots = {"default"}  # from_pretrained(<adapter folder>) loads the adapter as "default"
            any_loaded = True
        elif step.op == "save_adapter":
            if not slots and not expects_error:
                raise fail(step, "save_adapter needs a loaded adapter (it saves the active one)")
        elif step.op == "train":
            if step.full and slots:
                raise fail(
                    step,
                    "full fine-tuning (full = true) is the no-adapter baseline: load no adapter before it",
                )
            if not step.full and not slots and not expects_error:
                raise fail(
                    step, "train needs an adapter (add_adapter first), or full = true for full fine-tuning"
                )
        elif step.op == "repeat_load":
            base = step.name or "rep"
            if step.mode == "hotswap" and base not in slots and not expects_error:
                raise fail(
                    step, f"repeat_load mode 'hotswap' swaps into {base!r}, which is not loaded at this point"
                )
            if step.mode == "side_by_side":
                new = {f"{base}{i}" for i in range(step.count)}
                if new & slots:
                    raise fail(
                        step, f"repeat_load would reuse adapter names {', '.join(sorted(new & slots))}"
                    )
                slots |= new
                any_loaded = True
            if step.mode == "load_delete" and base in slots:
                raise fail(step, f"repeat_load mode 'load_delete' loads {base!r}, which is already loaded")
        elif step.op == "set_adapter":
            missing = [n for n in step.names if n not in slots]
            if missing and not expects_error:
                raise fail(
                    step,
                    f"set_adapter names {', '.join(missing)}, not loaded at this point "
                    f"(loaded: {', '.join(sorted(slots)) or 'none'})",
                )
        elif step.op in ("enable_adapters", "disable_adapters"):
            if not slots and not expects_error:
                raise fail(step, f"{step.op} needs a loaded adapter")
        elif step.op == "delete_adapter":
            if step.name not in slots and not expects_error:
                raise fail(
                    step,
                    f"delete_adapter {step.name!r}, not loaded at this point "
                    f"(loaded: {', '.join(sorted(slots)) or 'none'})",
                )
            if not expects_error:
                slots.discard(step.name)
        if step.expect.recompiles is not None and not any(c.enabled for c in s.matrix.compile):
            raise fail(step, "expect.recompiles needs a compiled model (matrix.compile other than 'none')")
        for kf in step.known_failures:
            _check_known_failure(s, step, kf)
    for kf in s.expect.known_failures:
        _check_known_failure(s, None, kf)


def _check_known_failure(s: Scenario, step: Step | None, kf: KnownFailure) -> None:
    where = step.label if step else "expect.known_failures"
    axis_values = {
        "precision": s.matrix.precision,
        "compile": tuple(c.label for c in s.matrix.compile),
        "hotswap_path": s.matrix.hotswap_path,
    }
    for axis, values in kf.when:
        for v in values:
            if v not in axis_values[axis]:
                raise ScenarioError(
                    f"known_failure.when.{axis} names {v!r}, not a value of the matrix "
                    f"({', '.join(axis_values[axis])})",
                    source=s.source_file,
                    field=where,
                )


# ---------------------------------------------------------------------------------------------------------
# Selection


def discover(paths: list[str | Path]) -> list[Path]:
    """Scenario files named on the command line: files as given, directories searched for *.toml (sorted)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("*.toml"))
            if not found:
                raise ScenarioError("directory holds no scenario file (*.toml)", source=str(p))
            files.extend(found)
        elif p.exists() or p.is_symlink():
            check_scenario_file(p)
            files.append(p)
        else:
            raise ScenarioError("no such file or directory", source=str(p))
    return files


def load_scenarios(paths: list[str | Path]) -> list[Scenario]:
    """Load every scenario under `paths`; scenario names must be unique across the selection."""
    scenarios = [load_scenario(f) for f in discover(paths)]
    seen: dict[str, str] = {}
    for s in scenarios:
        if s.name in seen:
            raise ScenarioError(
                f"duplicate scenario name {s.name!r} (also in {seen[s.name]})",
                source=s.source_file,
                field="scenario.name",
            )
        seen[s.name] = s.source_file
    return scenarios
