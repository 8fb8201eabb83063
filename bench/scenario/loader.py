"""TOML scenario file -> validated Scenario. Everything is checked before anything runs.

Every error is a ScenarioError naming the file, the place (step number, field) and what is allowed.
Nothing in a scenario file is evaluated as code: values are read as data and checked against fixed tables.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from bench.errors import ScenarioError
from bench.ops import OPS
from bench.ops.base import ParseContext
from bench.scenario.adapters import adapters_table
from bench.scenario.expectations import scenario_expectations, step_expectations, step_known_failures
from bench.scenario.files import check_scenario_file
from bench.scenario.rules import check_count_expectations_compiled, check_order, check_serving
from bench.spec.schema import (
    BACKENDS,
    COMPILE_MODES,
    COMPUTE_DTYPES,
    DEFAULT_HOTSWAP_PATH,
    HOTSWAP_PATHS,
    PRECISIONS,
    SERVING_STRATEGIES,
    WORKLOAD_KINDS,
    CompileSetting,
    HarnessOptions,
    Matrix,
    QuantOptions,
    Scenario,
    Step,
    TimingSpec,
    Workload,
)
from bench.spec.table import (
    MAX_BATCH_SIZE,
    MAX_BATCH_TOKENS,
    MAX_NEW_TOKENS,
    MAX_SEQ_LEN,
    Table,
    checked_name,
    did_you_mean,
)

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
    top = Table(data, "", source)
    head = top.sub("scenario")
    name = checked_name(head, "name", head.get("name", str))
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
    adapters, families = adapters_table(top.sub("adapters", {}))
    steps_raw = top.get("steps", list)
    if not steps_raw:
        raise top.error("steps", "a scenario needs at least one step")
    ctx = ParseContext(adapters=adapters, families=families)
    steps = tuple(_step(Table(s, f"steps[{i}]", source), i, ctx) for i, s in enumerate(steps_raw, 1))
    expect = scenario_expectations(top.sub("expect", {}))
    quant = _quantization(top.sub("quantization", {}))
    harness = _harness(top.sub("harness", {}))
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
        harness=harness,
        description=description,
        timeout_s=timeout_s,
        tags=tags,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
    )
    scenario = check_serving(scenario)
    check_order(scenario)
    check_count_expectations_compiled(scenario)
    return scenario


def _matrix(t: Table, default_path: str | None) -> Matrix:
    precision = t.str_list("precision", ("fp32",))
    for i, p in enumerate(precision):
        if p not in PRECISIONS:
            raise t.error(
                f"precision[{i}]",
                f"unknown precision {p!r}{did_you_mean(p, PRECISIONS)}; allowed: {', '.join(PRECISIONS)}",
            )
    raw_compile = t.get("compile", (list, str, dict), ["aot_eager"])
    if not isinstance(raw_compile, list):
        raw_compile = [raw_compile]
    compile_settings = tuple(_compile_setting(t, i, c) for i, c in enumerate(raw_compile))
    paths = t.str_list("hotswap_path", (default_path or DEFAULT_HOTSWAP_PATH,))
    if "hotswap_path" in t.data and default_path:
        raise t.error("hotswap_path", "set either scenario.hotswap_path or matrix.hotswap_path, not both")
    for i, p in enumerate(paths):
        if p not in HOTSWAP_PATHS:
            raise t.error(
                f"hotswap_path[{i}]",
                f"unknown hotswap path {p!r}{did_you_mean(p, HOTSWAP_PATHS)}; allowed: {', '.join(HOTSWAP_PATHS)}",
            )
    strategies = t.str_list("strategy", ())
    for i, st in enumerate(strategies):
        if st not in SERVING_STRATEGIES:
            raise t.error(
                f"strategy[{i}]",
                f"unknown strategy {st!r}{did_you_mean(st, SERVING_STRATEGIES)}; allowed: {', '.join(SERVING_STRATEGIES)}",
            )
    if "strategy" in t.data and not strategies:
        raise t.error("strategy", "empty axis: the matrix would have no case")
    t.finish()
    for axis, values in (
        ("precision", precision),
        ("compile", compile_settings),
        ("hotswap_path", paths),
        ("strategy", strategies or ("-",)),
    ):
        if not values:
            raise t.error(axis, "empty axis: the matrix would have no case")
        labels = [v.label if isinstance(v, CompileSetting) else v for v in values]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise t.error(axis, f"duplicate value(s): {', '.join(dupes)}")
    return Matrix(precision=precision, compile=compile_settings, hotswap_path=paths, strategy=strategies)


def _compile_setting(t: Table, i: int, value: Any) -> CompileSetting:
    where = f"compile[{i}]"
    if isinstance(value, str):
        if value not in BACKENDS:
            raise t.error(
                where,
                f"unknown backend {value!r}{did_you_mean(value, BACKENDS)}; allowed: {', '.join(BACKENDS)}",
            )
        return CompileSetting(backend=value)
    sub = Table(value, t.path(where), t.source)
    backend = sub.choice("backend", BACKENDS)
    mode = sub.choice("mode", COMPILE_MODES, None)
    fullgraph = sub.get("fullgraph", bool, False)
    dynamic = sub.get("dynamic", bool, None)
    sub.finish()
    if backend != "inductor" and mode not in (None, "default"):
        raise sub.error("mode", f"mode {mode!r} needs backend 'inductor'")
    return CompileSetting(backend=backend, mode=mode, fullgraph=fullgraph, dynamic=dynamic)


def _quantization(t: Table) -> QuantOptions:
    q = QuantOptions(
        compute_dtype=t.choice("compute_dtype", COMPUTE_DTYPES, "bf16"),
        double_quant=t.get("double_quant", bool, False),
    )
    t.finish()
    return q


def _harness(t: Table) -> HarnessOptions:
    h = HarnessOptions(freeze_params=t.get("freeze_params", bool, False))
    t.finish()
    return h


def _workload(t: Table) -> Workload:
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


def _timing(t: Table) -> TimingSpec:
    warmup = t.int_in("warmup", 3, 0, 10_000)
    min_rounds = t.int_in("min_rounds", 20, 1, 1_000_000)
    max_rounds = t.int_in("max_rounds", 10_000, 1, 1_000_000)
    min_time_s = t.get("min_time_s", float, 0.1)
    if not 0 <= min_time_s <= 3600:
        raise t.error("min_time_s", f"must be between 0 and 3600, got {min_time_s}")
    if max_rounds < min_rounds:
        raise t.error("max_rounds", f"must be at least min_rounds ({min_rounds}), got {max_rounds}")
    t.finish()
    return TimingSpec(warmup=warmup, min_rounds=min_rounds, min_time_s=min_time_s, max_rounds=max_rounds)


_COMMON_STEP_FIELDS = {"op", "expect", "known_failure", "known_failures", "note"}


def _step(t: Table, index: int, ctx: ParseContext) -> Step:
    """One [[steps]] entry: the common fields here, the op's own through its parse (bench/ops)."""
    t.where = f"step {index}"
    op_name = t.get("op", str)
    if op_name not in OPS:
        raise t.error(
            "op",
            f"unknown op {op_name!r}{did_you_mean(op_name, tuple(OPS))}; allowed: {', '.join(OPS)}",
        )
    op = OPS[op_name]
    t.where = f"step {index} ({op_name})"
    allowed = op.fields | _COMMON_STEP_FIELDS
    for key in t.data:
        if key not in allowed:
            raise t.error(
                key,
                f"unknown key for op {op_name!r}{did_you_mean(key, tuple(sorted(allowed)))}; allowed: {', '.join(sorted(allowed))}",
            )
    t.get("note", str, "")
    fields = op.parse(t, ctx)
    expect = step_expectations(t.sub("expect", {}))
    kf = step_known_failures(t)
    t.finish()
    return Step(index=index, op=op_name, expect=expect, known_failures=kf, **fields)


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
