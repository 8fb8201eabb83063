"""The estimate's policy as data: the default coefficients, the per-precision factors, the fit's settings.

A case's predicted wall time is sum(coefficient * feature) over the features of bench.estimate.features; its
peak RSS is RSS_BASE_BYTES + RSS_PER_WEIGHT_BYTE * the bytes of its model's weights. Calibration refits these
on the machine's own runs (bench.estimate.model.fit), starting from the defaults below.
"""

from __future__ import annotations

from types import MappingProxyType

# Compile backends with their own coefficient; any other backend (a custom one, "eager") shares "other".
COMPILE_BACKENDS = ("aot_eager", "inductor", "other")

# Seconds per unit of each feature (bench.estimate.features.CaseFeatures.vector). Fitted on 2026-12-05 to the
# workers' CPU time in the shipped run (`python -m bench run scenarios --jobs 2`, 84 cases, 2-core machine,
# torch 2.13 CPU; benchmarks/estimate_check.py --fit-only --target cpu; reports/performance/estimate.md): with
# one thread per job, CPU time is what a quiet machine's wall time would be. Where that run cannot tell terms
# apart (every model in it is tiny, and a case's checks grow with its steps) the fit gave 0 to checks and
# passes; they keep a small physical cost here (a tiny model's forward pass is ~2 ms). gparam_tokens and
# load_gb, which that run cannot see, were refitted on 2026-12-06 on the 2-core AMD EPYC (family 25, model 17)
# that the project's measurements now come from (the VM kind before it computed about 3x slower, and the
# defaults fitted there over-predicted a 135M case 5-6x here): load_gb is the subject's measured load,
# 0.09-0.31 s per GB of safetensors (135M and 0.5B shapes); gparam_tokens the least-squares fit, with the
# other terms at these defaults, to 23 realistic cases measured quiet with --jobs 1 (hotswap_135m and
# hotswap_05b n = 3 each, serving_135m's 5 cases n = 3, and the 135M forward-latency case n = 2;
# reports/performance/estimate.md, "The size terms refitted on this CPU").
DEFAULT_WALL_COEFFICIENTS = MappingProxyType(
    {
        "case": 0.45,  # the forked worker's start and the case's set-up
        "steps": 0.05,  # one op's own API call (a load, a toggle) and what follows it
        "checks": 0.02,  # a fresh reference and the math oracle's plain model, per checked output
        "passes": 0.002,  # one forward pass of a tiny model: Python and dispatch overhead
        "gparam_tokens": 0.044,  # 1e9 parameter-tokens of compute
        "load_gb": 0.3,  # 1 GB of weights loaded (the subject, each reference, each oracle model)
        # One `load_adapter` per decoder layer of the model it goes into: a load walks the model and injects a
        # LoRA layer in every target module, so its cost grows with the layers, not with the adapter's bytes.
        # Fitted on 2026-12-06 to the 135M serving example's strategies (30 layers), which differ in what they
        # load: side_by_side and mixed_batch 8 adapters in their setup, reload one per switch (44), each check
        # 8; against the estimate's other terms, side_by_side is over by 0.25 s a load and reload by 0.23 s
        # (reports/performance/estimate.md, "Serving strategies told apart").
        "adapter_load_layers": 0.008,
        "timed_floor_s": 1.1,  # the timing policy's min_time_s, per measured step
        # A compile's cost is split into a part per checked call on the compiled model (guards, a recompile of
        # a small frame) and a part per layer of each first trace. Fitted on 2026-12-06 to two facts: the
        # shipped run's compile time as the 2026-12-05 fit gave it (233 checked compiled calls x 1.1 s, 66
        # first traces of 2-layer models), and the aot_eager compile of the 135M and 0.5B hotswap examples
        # (14.6 s over 30 layers and 12.6 s over 24 with 3 checked calls each, n = 3 each:
        # reports/performance/realistic_sizes.md). Inductor's per layer is the 135M hotswap example compiled with
        # inductor from a warm cache, the case the per-call 2.7 s also assumes: 12.1 s over 30 layers with 3
        # checked calls (n = 2, 12.12 and 12.14 s), less than aot_eager's, whose AOT trace is not cached. From
        # a cold cache the same compile took 57.2 s (n = 1): a first use the estimate cannot see, like a build.
        "compiles:aot_eager": 0.87,  # one checked call on a model compiled with aot_eager
        "compiles:inductor": 2.7,  # the same with inductor, warm cache (README: 2.7 s a tiny compile; 20.6 s cold)
        "compiles:other": 1.27,
        "compile_layers:aot_eager": 0.40,  # one layer of a first trace with aot_eager
        "compile_layers:inductor": 0.13,  # (12.1 s - 3 x 2.7 s) / 30 layers
        "compile_layers:other": 0.40,
    }
)
WALL_FEATURES = tuple(DEFAULT_WALL_COEFFICIENTS)

# Peak RSS: the forked worker with torch, transformers and peft imported, plus this many bytes per byte of
# the model's weights (the 135M case above peaked at 968 MiB: about one copy of its 538 MB over the level;
# references come and go one at a time).
RSS_BASE_BYTES = 410 * 2**20  # the shipped run's fitted level (fp32 tiny models)
RSS_PER_WEIGHT_BYTE = 1.1
RSS_FEATURES = ("rss_base", "weight_bytes")

# Bytes per parameter as loaded (quantized formats keep embeddings and norms unquantized: a rough average),
# and how much slower than fp32 a parameter-token computes on CPU (bf16/fp16 without fast kernels, the
# bitsandbytes CPU paths dequantize every call).
BYTES_PER_PARAM = MappingProxyType(
    {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.2, "nf4": 0.7, "fp4": 0.7}
)
COMPUTE_FACTOR = MappingProxyType(
    {"fp32": 1.0, "bf16": 1.5, "fp16": 3.0, "int8": 3.0, "nf4": 4.0, "fp4": 4.0}
)
# A swap into a hotswap slot as a fraction of a `load_adapter` (it reads the adapter's files and copies its
# weights into the slot's, no new layers), per hotswap path: the 135M serving example's serve time over
# side_by_side's, which switches with set_adapter alone, per switch (44): 0.02 s through PEFT's own hotswap
# functions and 0.09 s through transformers' load_adapter(hotswap=True), with a load at 0.24 s (n = 3 each).
SWAP_LOADS = MappingProxyType({"peft": 0.1, "transformers": 0.4})

# A train step's optimizer step costs about three forward passes (forward, backward, AdamW).
TRAIN_PASSES_PER_STEP = 3

# The fit: ridge regression towards the defaults. Each coefficient's prior weighs as much as this many
# cases whose feature sits at its mean, so a direction the stored runs do not vary (a tiny model's params)
# keeps its default, and a direction they do vary follows the data.
PRIOR_WEIGHT_CASES = 3.0
# The terms that scale with the model's size, and how much the weights of the measured cases must vary (largest
# over smallest, and the largest at least SIZE_TO_FIT_BYTES) before a calibration fits them rather than keep
# their defaults: a tiny model's compute and load are lost in its per-pass and per-check costs.
SIZE_TERMS = (
    "gparam_tokens",
    "load_gb",
    "adapter_load_layers",
    "compile_layers:aot_eager",
    "compile_layers:inductor",
    "compile_layers:other",
)
SIZE_SPREAD_TO_FIT = 4.0
SIZE_TO_FIT_BYTES = 64 * 2**20
# Fewer measured cases than this on the machine: the defaults alone (the estimate says "uncalibrated").
MIN_CALIBRATION_CASES = 5
# Runs kept per machine in the calibration file; the oldest go first.
MAX_RUNS_KEPT = 20

# Other work on the machine: a run started at 1-minute load average L (the others' processes, before its own
# workers start) with N jobs on C cores shares them, and each case takes about max(1, (L + N) / C) times its
# quiet time (bench.estimate.model.slowdown). Calibration divides measured times by the factor their run had
# and the estimate multiplies by the factor now, so runs measured on a busy machine calibrate a quiet one.
LOAD_AWARE = True
# The 1-minute load average is damped with a 60 s time constant, so a run that kept the cores busy for D s and
# ended t s ago still holds about cores x (1 - exp(-D/60)) x exp(-t/60) of it (bench.estimate.model.own_tail).
# That tail is this machine's own last run, not other work, and is taken out before the load factor: run back
# to back on a quiet machine, a run started 5 s after the one before it read load 1.8 and took x1.4.
LOAD_AVERAGE_TAU_S = 60.0

# The run's own overhead before and after its cases: the preloaded workers' imports and the environment block.
DEFAULT_RUN_OVERHEAD_S = 6.0

CALIBRATION_FILE = "estimate-calibration.jsonl"  # in the cache root ($PEFT_BENCH_CACHE)
CALIBRATION_FORMAT = 1
