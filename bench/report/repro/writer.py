"""The writer of a reproduction script's main(): the ops emit their calls through it (bench/ops, `script`)."""

from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass, field

from bench.engine.hotswap import PATHS, HotswapPath
from bench.ops import OPS
from bench.spec.cases import Case
from bench.spec.host import bnb_cpu_packs_4bit
from bench.spec.schema import Step


@dataclass
class Writer:
    """Emits main()'s body while tracking what the model under test looks like, as the harness's Subject."""

    case: Case
    lines: list[str] = field(default_factory=list)
    depth: int = 1
    compiled: bool = False
    generate_compiled: bool = False
    loaded_any: bool = False
    pending_target_rank: int | None = None
    adapters_used: frozenset[str] = frozenset()  # keys the replayed steps load: only these are built
    # Module-level source the script carries, in first-use order: the harness's own functions and classes
    # (their source, verbatim: the script runs without peft-bench) and the template text around them.
    carried: list[str] = field(default_factory=list)

    def carry(self, *items) -> None:
        """Put functions or classes of peft-bench (their source) or source text into the script, once each."""
        for item in items:
            text = (item if isinstance(item, str) else _source(item)).strip("\n")
            if text not in self.carried:
                self.carried.append(text)

    def emit(self, text: str = "") -> None:
        self.lines.append(("    " * self.depth + text) if text else "")

    @contextlib.contextmanager
    def block(self, header: str):
        self.emit(header)
        self.depth += 1
        before = len(self.lines)
        try:
            yield
        finally:
            if len(self.lines) == before:
                self.emit("pass")
            self.depth -= 1

    @property
    def generate(self) -> bool:
        return self.case.scenario.workload.kind == "generate"

    def call(self, op: str) -> str:
        """The model call the harness makes for the op: its own measured call, else the workload's."""
        kind = OPS[op].call or self.case.scenario.workload.kind
        return "generate(model)" if kind == "generate" else "forward(model, compiled)"

    @property
    def path(self) -> HotswapPath:
        return PATHS[self.case.hotswap_path]

    def op(self, step: Step) -> None:
        """The step's API call, as the harness makes it: the op's own script (bench/ops)."""
        OPS[step.op].script(self, step)

    def model_calls(self, step: Step, *, target: bool) -> None:
        """The calls the harness makes after the op: the check call after an adapter change, the measured
        call on forward/generate (and, at the failing step, a few more, as the timing rounds make)."""
        op = OPS[step.op]
        if op.changes_state:
            if self.case.scenario.harness.freeze_params:
                self.emit(
                    "model.requires_grad_(False)  # harness.freeze_params: dynamo guards on requires_grad"
                )
            if (self.compiled or self.generate_compiled) and self.case.precision in ("nf4", "fp4"):
                self.carry(bnb_cpu_packs_4bit)  # the harness's own test (bench.spec.precision)
                with self.block(
                    "if bnb_cpu_packs_4bit(DEVICE):  # the harness's eager forward: bitsandbytes repacks weights"
                ):
                    self.emit("model(**INPUTS)")
        # After train no file holds the weights: the harness makes no check call until they are saved.
        if op.checks_output:
            self.emit(f"out = {self.call(step.op)}")
            if target and op.measures:
                with self.block("for _ in range(3):"):
                    self.emit(self.call(step.op))

    def step(self, step: Step, *, target: bool = False) -> None:
        self.op(step)
        self.model_calls(step, target=target)
        if not target:
            OPS[step.op].script_after(self, step)


@functools.cache
def _source(item) -> str:
    # inspect.getsource re-reads and re-tokenises the module each time: once per object, not once per script.
    return inspect.getsource(item)
