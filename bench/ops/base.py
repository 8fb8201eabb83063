"""What an op is, in one place: its step fields, its order rule, its effect on the adapter state, its real API
call, and the lines a reproduction script makes for it.

An op is a subclass of Op in a module of bench/ops/; the registry (bench.ops.OPS) finds it by its `name`.
The loader reads `fields`, `parse` and `check`; the worker reads `transition`, `args`, `apply`, `call`,
`skip_note` and `own_outcomes`; the repro writer reads `script`, `script_after` and `script_check`; the report
and the judge read the flags (`compiles`, `adds_adapter`, `loads_into_model`) of the op a record names
(bench.ops.op_named).
Nothing outside bench/ops branches on an op's name. Adding an op is one new module here, with its test and
its line in the docs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from bench.errors import ScenarioError
from bench.spec.state import AdapterState
from bench.spec.table import checked_name, did_you_mean

if TYPE_CHECKING:
    from bench.results.records import Outcome
    from bench.spec.schema import AdapterSpec, CompileSetting, Scenario, Step
    from bench.spec.table import Table

# Adapter names the harness chooses when a step names none. Written once, here.
PRETRAINED_SLOT = "default"  # from_pretrained(<adapter folder>) loads the adapter under this name
REPEAT_SLOT = "rep"  # repeat_load's base name: rep0, rep1, ... side by side; "rep" for hotswap/load_delete


@dataclass
class ParseContext:
    """What parsing one step may consult: the [adapters] keys and the keys earlier save_adapter steps added."""

    adapters: dict[str, AdapterSpec]
    saved: set[str] = field(default_factory=set)
    # [adapters.NAME] with `count`: a generated family; NAME stands for its members (NAME0, NAME1, ...).
    families: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def known(self, key: str) -> bool:
        return key in self.adapters or key in self.saved


@dataclass
class Walk:
    """The model as the steps leave it, walked at load time without torch: what the order rules read.

    The adapters are the one adapter-state machine the worker uses too (`state`, advanced by each op's
    `transition` in bench.scenario.rules); the walk adds only what that state does not model: compile and
    hotswap set-up."""

    scenario: Scenario
    state: AdapterState = field(default_factory=AdapterState)
    compiled: bool = False
    hotswap_enabled: bool = False
    any_loaded: bool = False

    @property
    def slots(self) -> frozenset[str]:
        """The adapter names the model holds (none after merge_and_unload: it is a plain model then)."""
        return frozenset() if self.state.unloaded else frozenset(s.name for s in self.state.slots)

    @property
    def unloaded(self) -> bool:
        return self.state.unloaded

    def fail(self, step: Step, message: str) -> ScenarioError:
        return ScenarioError(message, source=self.scenario.source_file, field=step.label)

    def loaded(self) -> str:
        return ", ".join(sorted(self.slots)) or "none"


class Op:
    """One scenario op. Subclasses set `name` and override what differs from these defaults."""

    name: ClassVar[str]
    # TOML keys of this op beyond the common ones (op, expect, known_failure(s), note).
    fields: ClassVar[frozenset[str]] = frozenset()
    # The op changes which adapter weights produce the output: a check call against the reference follows.
    changes_state: ClassVar[bool] = False
    # The model call the op is, measured (first call alone, then warm-up and timed rounds) and checked; None:
    # the op is an API call, checked after it by the workload's own call (Subject.verification_call).
    call: ClassVar[Literal["forward", "generate"] | None] = None
    # The op compiles the model: the executor then requires the next model call to compile a frame.
    compiles: ClassVar[bool] = False
    # The op makes its own model calls and keeps their responses (serve): the executor checks each of them.
    checks_responses: ClassVar[bool] = False
    # The op's state change is meant to change the output (every state op but save_adapter, which relabels
    # the same weights as a folder): its new state's reference must differ from the previous one's.
    changes_output: ClassVar[bool] = True

    # The op loads one adapter's files (`adapter`): the bytes it moved and their copy floor are recorded.
    moves_adapter: ClassVar[bool] = False
    # The op puts one adapter into the model it already holds (a new slot, or a swap into one): the report's
    # memory growth sums these steps' own RSS changes (bench.report.memory_data.growth_series).
    adds_adapter: ClassVar[bool] = False
    # The StepRecord field that keeps what `apply` returned (TrainStats, RepeatStats); None: nothing is kept.
    result_field: ClassVar[str | None] = None

    # Expectations only this op decides, beyond the ones every op can (see `produces`), in `own_outcomes`.
    own_expectations: ClassVar[frozenset[str]] = frozenset()

    @property
    def measures(self) -> bool:
        """The op is a measured model call: its last timed call is checked too (steady_state_matches)."""
        return self.call is not None

    @property
    def produces(self) -> frozenset[str]:
        """Every expectation a step of this op can decide: a known_failure naming another can never apply."""
        # A step declaring `raises` is followed by a model call whatever the op: the refusal check.
        names = {
            "succeeds",
            "raises",
            "recompiles",
            "graph_breaks",
            "cuda_graph_recordings",
            "refusal_leaves_state",
            *self.own_expectations,
        }
        if self.checks_output:
            names |= {"matches_reference", "compile_effective", "oracles_agree"}
        if self.measures:
            names.add("steady_state_matches")
        if self.checks_output and self.changes_state and self.changes_output:
            names.add("distinguishable")
        return frozenset(names)

    @property
    def loads_into_model(self) -> bool:
        """The op loads an adapter's files into the model already there (load_adapter; load_pretrained builds a
        new model): the adapters checked to fit the model before the case runs, and, loaded without `hotswap`,
        the reload a hotswap is held against (bench.judge.figures)."""
        return self.moves_adapter and self.adds_adapter

    @property
    def checks_output(self) -> bool:
        """A model call follows the op and is compared with the reference."""
        return self.changes_state or self.measures

    def parse(self, t: Table, ctx: ParseContext) -> dict[str, Any]:
        """The op's own fields, read from its [[steps]] table: keyword arguments of Step."""
        return {}

    def check(self, walk: Walk, step: Step) -> None:
        """Refuse an order that cannot work (raise walk.fail(...)), and advance the walk."""

    def contrast_state(self, previous: AdapterState) -> AdapterState:
        """The state this op's new state must be told apart from: the one before it, by default."""
        return previous

    def transition(self, state: AdapterState, step: Step) -> AdapterState:
        """The adapter state a correct library is in after the op (pure)."""
        return state

    def args(self, step: Step) -> dict[str, Any]:
        """The step's arguments as recorded in the results, under their TOML names."""
        return {}

    def apply(self, subject, step: Step, adapters: dict[str, AdapterSpec], locations: dict[str, str]) -> Any:
        """Make the op's real API call(s) on the subject. Returns what the op reports (stats, names)."""
        return None

    def skip_note(self, compile_setting: CompileSetting) -> str | None:
        """Why this case does not run the op (the step is then a pass that says so); None: it runs."""
        return None

    def own_outcomes(
        self, step: Step, result: Any, state: AdapterState, params: dict[str, str]
    ) -> list[Outcome]:
        """The outcomes of `own_expectations`, from what `apply` returned and the state a correct library is in
        (pure); asked only when the op raised nothing."""
        return []

    def script(self, w, step: Step) -> None:
        """Emit the op's API call into a reproduction script (bench.report.repro's writer)."""
        w.emit(f"pass  # {self.name}")

    def script_after(self, w, step: Step) -> None:
        """Emit lines after the step's model calls, when a later step follows it in the script (the failing
        step is followed by its check instead): e.g. the workload's inputs back after a step on its own."""

    def script_check(self, w, expectation: str, step: Step, state: AdapterState, what: str) -> bool:
        """Emit the script lines that check one of `own_expectations` after the step (calling `reproduced`
        when it fails); False: the repro writer cannot check it yet."""
        return False


# ---------------------------------------------------------------------------------------------------------
# Field readers shared by several ops


def read_adapter(t: Table, ctx: ParseContext) -> str:
    adapter = t.get("adapter", str, None)
    if adapter is None:
        raise t.error("adapter", "required field is missing: which adapter (a key of [adapters])")
    if not ctx.known(adapter):
        known = tuple(ctx.adapters) + tuple(sorted(ctx.saved))
        raise t.error(
            "adapter",
            f"adapter {adapter!r} is not defined in [adapters]{did_you_mean(adapter, known)}"
            + (f"; defined: {', '.join(known)}" if known else "; none are defined"),
        )
    return adapter


def read_name(t: Table, *, required: str | None = None) -> str | None:
    """The adapter_name field; `required` is the message when it must be given."""
    name = t.get("name", str, None)
    if name is not None:
        checked_name(t, "name", name)
    elif required:
        raise t.error("name", f"required field is missing: {required}")
    return name


def common_args(step: Step) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for key in ("adapter", "name"):
        value = getattr(step, key)
        if value is not None:
            args[key] = value
    return args
