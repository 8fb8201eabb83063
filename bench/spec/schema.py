"""What a validated scenario is. Frozen dataclasses only; the loader is the one place that builds them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bench.spec.counts import CountBound

PRECISIONS = ("fp32", "bf16", "fp16", "int8", "nf4", "fp4")
BACKENDS = ("none", "eager", "aot_eager", "inductor")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# The inductor modes that record CUDA graphs (bench.engine.probes.cudagraphs counts them).
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
HOTSWAP_PATHS = ("transformers", "peft")
DEFAULT_HOTSWAP_PATH = HOTSWAP_PATHS[0]  # case ids name the path only when it is not this one
WORKLOAD_KINDS = ("forward", "generate")
MATRIX_AXES = ("precision", "compile", "hotswap_path", "strategy")
# How a serve step switches between adapters (bench/engine/serving/strategies.py); a matrix axis of serving scenarios.
SERVING_STRATEGIES = ("hotswap", "side_by_side", "reload", "mixed_batch")
# The PEFT methods the Transformers guide supports for Transformers models; hotswapping is LoRA's only.
ADAPTER_TYPES = ("lora", "ia3", "adalora")
POPULARITIES = ("uniform", "zipf")
ARRIVALS = ("closed", "poisson")

# Expectation names a step or known_failure may use. "succeeds" is implicit on every step that does not
# declare `raises`; "distinguishable" is implicit on every state-changing step whose output is checked.
EXPECTATIONS = (
    "recompiles",
    "graph_breaks",
    "matches_reference",
    "raises",
    "succeeds",
    "distinguishable",  # the new state's reference differs from the previous state's (docs/verdicts.md)
    "active_adapters",  # implicit on the active_adapters op: the names a correct library reports
    "loss_decreases",  # implicit on train steps
    "oracles_agree",  # implicit with every reference check: the library's reference agrees with the math
    "compile_effective",  # implicit on the first model call after compile: at least one frame compiled
    "wrong_responses",  # serve: responses that differ from their adapter's fresh reference (implicit "== 0")
    "recompiles_after_warmup",  # serve: recompiles once every adapter in play has been served once
    "faster_than",  # serve: median latency below factor x another strategy's of the same run (bench.judge.relative)
    "steady_state_matches",  # implicit on forward/generate: the last timed call matches the reference too
    "refusal_leaves_state",  # implicit after an op that raises as declared: the previous state's output
    "plain_model",  # implicit on merge_and_unload: no LoRA layer and no peft_config left
    "swap_in_place",  # implicit on a hotswap: the slot's LoRA weights are the same objects and storage after it
    "cuda_graph_recordings",  # inductor CUDA graphs recorded during the step (bench.engine.probes.cudagraphs)
)


@dataclass(frozen=True)
class CompileSetting:
    """One value of the `compile` axis. backend 'none' means the model is never compiled."""

    backend: str = "none"
    mode: str | None = None
    fullgraph: bool = False
    dynamic: bool | None = None

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    @property
    def label(self) -> str:
        parts = [self.backend]
        if self.mode and self.mode != "default":
            parts.append(self.mode)
        if self.fullgraph:
            parts.append("fullgraph")
        if self.dynamic is True:
            parts.append("dynamic")
        elif self.dynamic is False:
            parts.append("static")
        return "+".join(parts)


@dataclass(frozen=True)
class QuantOptions:
    """bitsandbytes options for the int8 / nf4 / fp4 precisions (ignored by fp32, bf16, fp16)."""

    compute_dtype: str = "bf16"  # bnb_4bit_compute_dtype, and the dtype of the non-quantised modules
    double_quant: bool = False  # bnb_4bit_use_double_quant


COMPUTE_DTYPES = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Workload:
    """The fixed inputs every measurement and every correctness check uses."""

    kind: str = "forward"
    batch_size: int = 2
    seq_len: int = 16
    new_tokens: int = 8
    seed: int = 0


@dataclass(frozen=True)
class HarnessOptions:
    """What the harness itself does between the scenario's API calls ([harness]); recorded in every result.

    freeze_params: after every state op, set requires_grad=False on every parameter. transformers'
    set_adapter (and a later load_adapter) flip requires_grad on the LoRA weights and dynamo guards on it,
    so a user's plain sequence of calls recompiles there; the reset hides that recompile. Off by default:
    the suite measures the flow users run unless a scenario asks for the workaround."""

    freeze_params: bool = False


@dataclass(frozen=True)
class TimingSpec:
    """How a measured call is repeated: warm-up calls, then rounds until both minimums are reached."""

    warmup: int = 3
    min_rounds: int = 20
    min_time_s: float = 0.1
    max_rounds: int = 10_000


@dataclass(frozen=True)
class AdapterSpec:
    """A named adapter: a saved PEFT adapter (path or Hub id) or a spec the suite builds and saves.

    `type` is one of ADAPTER_TYPES, the methods the Transformers guide names. IA3 takes `targets`,
    `feedforward` (the targets whose input, not output, is rescaled), `seed` and `init_std` (the learned vectors
    are drawn around 1); AdaLoRA takes `rank` (its init_r = target_r), `alpha`, `targets`, `seed`, `init_std`.
    `use_dora` (LoRA only) makes it DoRA: a magnitude vector per target rescales each output row."""

    key: str
    path: str | None = None
    type: str = "lora"
    feedforward: tuple[str, ...] = ()  # IA3 only
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = 0
    rank_pattern: tuple[tuple[str, int], ...] = ()
    alpha_pattern: tuple[tuple[str, float], ...] = ()
    init_std: float = 0.05
    lora_dropout: float = 0.0
    modules_to_save: tuple[str, ...] = ()
    # LoRA on nn.Parameters, not modules (peft's target_parameters, e.g. a mixture of experts' fused
    # "mlp.experts.gate_up_proj"): a parameter name equal to an entry or ending in ".<entry>"
    target_parameters: tuple[str, ...] = ()
    use_dora: bool = False  # LoRA only
    # save_pretrained's save_embedding_layers: True keeps peft's default ("auto": the base weights of a targeted
    # embed_tokens / lm_head are saved beside the LoRA), False leaves them out.
    save_embedding_layers: bool = True

    @property
    def generated(self) -> bool:
        return self.path is None

    @property
    def method(self) -> str:
        """What the adapter is, as a report names it: `type`, or "dora" for a LoRA spec with use_dora."""
        return "dora" if self.use_dora else self.type

    @property
    def max_rank(self) -> int:
        return max([self.rank, *(r for _, r in self.rank_pattern)])


@dataclass(frozen=True)
class ServeSpec:
    """A serve step: a seeded request stream over several adapters (docs/serving.md)."""

    adapters: tuple[str, ...]  # adapter keys, in popularity order (a family expands to its members)
    requests: int = 64
    popularity: str = "uniform"  # "uniform" | "zipf": adapter i drawn with weight 1 / (i + 1) ** zipf_s
    zipf_s: float = 1.1
    arrival: str = "closed"  # "closed": `concurrency` clients back to back | "poisson": open loop at rate_rps
    rate_rps: float | None = None
    concurrency: int = 1
    prompts: int = 8  # distinct prompts the requests draw from (seq_len tokens each, from the workload)
    batch_size: int = 4  # mixed_batch: requests of different adapters in one batch
    max_wait_ms: float = 10.0  # mixed_batch: how long a batch waits to fill once its first request is queued
    warmup_requests: int = 1  # besides each adapter's first request, the first N requests are warm-up
    check_per_adapter: int | None = (
        None  # None: every response is checked; k: a seeded sample of k per adapter
    )
    seed: int = 0


@dataclass(frozen=True)
class KnownFailure:
    """An expectation a released library is known to break, like pytest's strict xfail.

    `when` restricts it to matrix values, e.g. (("hotswap_path", ("transformers",)),). `host` names facts
    about the machine (bench.spec.host.FACTS) that must all hold for the bug to be possible there at all; the
    worker drops the marker on a host where one does not (bench.spec.host.scope_to_host).

    The fingerprint says what the known bug looks like; a failure that does not look like it is a plain
    `fail` (docs/verdicts.md). `error`: the class the bug raises (a name in the raised exception's MRO).
    `match`: a regular expression the outcome's message must contain (the error text, the recompile reasons,
    the output detail). `band`: the measured value the bug gives, lo <= value <= hi, finite: the output's max
    abs difference for output checks, the count for counts (wrong_responses, recompiles, graph_breaks).
    """

    expectation: str
    reason: str
    when: tuple[tuple[str, tuple[str, ...]], ...] = ()
    host: tuple[str, ...] = ()
    error: str | None = None
    match: str | None = None
    band: tuple[float, float] | None = None

    def applies(self, params: dict[str, str]) -> bool:
        return all(params.get(axis) in values for axis, values in self.when)

    @property
    def fingerprinted(self) -> bool:
        return self.error is not None or self.match is not None or self.band is not None

    @property
    def fingerprint(self) -> str:
        """The fingerprint as one line ("" when the marker has none): recorded with every xfail it made."""
        parts = []
        if self.error is not None:
            parts.append(f"raises {self.error}")
        if self.match is not None:
            parts.append(f"message ~ /{self.match}/")
        if self.band is not None:
            parts.append(f"value in [{self.band[0]:g}, {self.band[1]:g}]")
        return ", ".join(parts)

    def mismatch(self, message: str, measured: float | None, error_types: tuple[str, ...]) -> str | None:
        """Why what was observed is not this known bug (None: it is). NaN and infinity never match a band:
        a marker for a wrong value never covers an output that is not a number."""
        if self.error is not None and self.error not in error_types:
            got = error_types[0] if error_types else "no exception"
            return f"expected the bug to raise {self.error}, got {got}"
        if self.match is not None and not re.search(self.match, message):
            return f"the message does not contain /{self.match}/"
        if self.band is not None:
            lo, hi = self.band
            if measured is None or measured != measured or measured in (float("inf"), float("-inf")):
                return f"the measured value is {measured}, not a finite value in [{lo:g}, {hi:g}]"
            if not lo <= measured <= hi:
                return f"the measured value {measured:.4g} is outside [{lo:g}, {hi:g}]"
        return None


@dataclass(frozen=True)
class Expectations:
    recompiles: CountBound | None = None
    graph_breaks: CountBound | None = None
    matches_reference: bool | None = None
    raises: str | None = None
    wrong_responses: CountBound | None = None  # serve steps
    recompiles_after_warmup: CountBound | None = None  # serve steps
    faster_than: tuple[tuple[str, float], ...] = ()  # serve steps: (strategy, factor) pairs
    cuda_graph_recordings: CountBound | None = None  # compile mode "reduce-overhead": re-records counted
    # false: the step is declared to leave the output where it was (add_adapter's B = 0); the check then
    # requires the two references to match instead, and a later step must tell the states apart.
    distinguishable: bool | None = None
    # `recompiles` given per compile setting ({label = "== 1", ...}): what a correct torch must do differs with
    # the setting (a new input shape recompiles under dynamic=False, not under dynamic=True). The worker keeps
    # the case's own bound as `recompiles` (bench.spec.per_compile).
    recompiles_by_compile: tuple[tuple[str, CountBound], ...] = ()

    @property
    def strict(self) -> bool:
        """Steps that allow no recompile run inside torch._dynamo.config.patch(error_on_recompile=True)."""
        return self.recompiles is not None and self.recompiles.allows_zero_only


@dataclass(frozen=True)
class Step:
    index: int  # 1-based, as users count steps in their file
    op: str
    adapter: str | None = None  # key into Scenario.adapters
    name: str | None = None  # adapter_name (the slot) in the model
    names: tuple[str, ...] = ()  # set_adapter
    hotswap: bool = False
    # load_adapter with `hotswap = "auto"`: no hotswap argument passed; transformers hotswaps by itself into
    # an existing slot after enable_peft_hotswap (its default, hotswap="auto")
    auto_hotswap: bool = False
    target_rank: int | None = None
    inplace: bool = False  # compile: model.compile() in place instead of torch.compile(model)
    # train
    train_steps: int | None = None
    learning_rate: float | None = None
    full: bool = False  # full fine-tuning: every parameter trainable (the baseline LoRA is compared with)
    # save_adapter: the key under which the saved folder can be used by later steps
    save_as: str | None = None
    # repeat_load
    mode: str | None = None
    count: int | None = None
    cycle: tuple[str, ...] = ()  # adapter keys used in turn
    # forward: the step's own input shape (None: the workload's); both oracles run on the same inputs
    batch_size: int | None = None
    seq_len: int | None = None
    serve: ServeSpec | None = None
    expect: Expectations = field(default_factory=Expectations)
    known_failures: tuple[KnownFailure, ...] = ()

    @property
    def label(self) -> str:
        return f"step {self.index} ({self.op})"


@dataclass(frozen=True)
class Matrix:
    precision: tuple[str, ...] = ("fp32",)
    compile: tuple[CompileSetting, ...] = (CompileSetting("aot_eager"),)
    hotswap_path: tuple[str, ...] = (DEFAULT_HOTSWAP_PATH,)
    strategy: tuple[str, ...] = ()  # serving scenarios only: how the serve step switches adapters


@dataclass(frozen=True)
class ScenarioExpectations:
    total_recompiles: CountBound | None = None
    total_graph_breaks: CountBound | None = None
    known_failures: tuple[KnownFailure, ...] = ()


@dataclass(frozen=True)
class Scenario:
    name: str
    source_file: str
    model: str
    matrix: Matrix
    workload: Workload
    timing: TimingSpec
    adapters: tuple[AdapterSpec, ...]
    steps: tuple[Step, ...]
    expect: ScenarioExpectations = field(default_factory=ScenarioExpectations)
    quantization: QuantOptions = field(default_factory=QuantOptions)
    harness: HarnessOptions = field(default_factory=HarnessOptions)
    description: str = ""
    timeout_s: float = 600.0
    tags: tuple[str, ...] = ()
    # Opt-ins for sources that can run code when loaded: a model's own Python files, pickle weight files.
    trust_remote_code: bool = False
    allow_pickle: bool = False

    def adapter(self, key: str) -> AdapterSpec:
        for spec in self.adapters:
            if spec.key == key:
                return spec
        raise KeyError(key)
