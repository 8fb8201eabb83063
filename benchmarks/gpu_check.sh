#!/usr/bin/env bash
# The suite on a CUDA GPU, in one pass of a few minutes (what a lent GPU gives: reports/gpu/README.md).
#     bash benchmarks/gpu_check.sh OUT        (from the repo; OUT collects at most 8 files)
# With .whl/ beside it (wheels of transformers, peft, regex, peft-bench and an unpacked bitsandbytes in
# .whl/bnb), they are installed into /tmp/site first: for a machine with torch and no network.
# Stages, each with its own time limit, so that one that hangs costs only its own figures:
#   A. tests/engine/test_cuda_real.py: the CUDA memory probe, NVML, the CUDA clock, the generators and a forked
#      case on the GPU, each against a known amount of work;
#   B. at the same time: the whole test suite on a host that has a GPU (the suite is written for CPU
#      machines: what fails here assumed there is none), and the shipped scenarios with --device cuda
#      (their verdicts; timings distorted by B's own load);
#   C. then, on a quiet machine, one case at a time: the compiled hotswap with inductor and CUDA graphs
#      (examples/gpu/inductor_hotswap.toml, and examples/gpu/cudagraphs_hotswap.toml, whose CUDA graph
#      re-records per step go to stages.log) and the serving replay on a 135M-shaped model
#      (examples/cpu/serving_135m.toml), whose timings are the ones to report; stages.log gets each serving
#      case's serve_s, setup_s and check_s (checking every response against serving the stream);
#   Q. bitsandbytes on CUDA: the 4-bit and 8-bit hotswap and quantized scenarios (their bitsandbytes-on-CPU
#      known failures are scoped to CPU hosts; what CUDA does instead is in reports/gpu/README.md).
# STAGES=A,C picks some (default: A,B,C,Q); SERVING_K=-k,hotswap narrows the serving replay; TA, TC1,
# TC2 and TQ override the time limits (s) of A, C's two runs and Q.
set -u
SERVING_K=${SERVING_K:-}
stages=",${STAGES:-A,B,C,Q},"
want() { [[ $stages == *",$1,"* ]]; }
out=${1:?usage: gpu_check.sh OUT}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
py=python3
t0=$(date +%s)
stamp() { echo "[$(($(date +%s) - t0)) s] $*" | tee -a "$out/stages.log"; }

if [ -d .whl ]; then
  stamp "installing the carried wheels"
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl >"$out/env.txt" 2>&1 || { cat "$out/env.txt"; exit 1; }
  [ -d .whl/bnb ] && cp -r .whl/bnb/* /tmp/site/
  export PYTHONPATH="$PWD:/tmp/site"
fi
{
  nvidia-smi
  $py - <<'EOF'
import importlib, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
for m in ("transformers", "peft", "accelerate", "bitsandbytes", "triton", "pynvml", "bench"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"), getattr(mod, "__file__", ""))
    except Exception as exc:
        print(m, "FAILED", type(exc).__name__, exc)
EOF
  nproc; free -g
} >>"$out/env.txt" 2>&1
$py -c "import bench.cli.main, bench.worker.execute, transformers, peft" >>"$out/env.txt" 2>&1 ||
  { stamp "the suite does not import here (env.txt)"; exit 1; }
stamp "environment read"

mkdir -p /tmp/g

stage_A() {
  stamp "A: tests/engine/test_cuda_real.py"
  timeout "${TA:-90}" $py -m pytest -q -p no:cacheprovider -rA tests/engine/test_cuda_real.py >"$out/cuda_real.log" 2>&1
  stamp "A: exit $?"
}
stage_B() {
  stamp "B: the test suite on a GPU host, beside the shipped scenarios on cuda"
  (
    OMP_NUM_THREADS=1 timeout -s INT 220 $py -m pytest -q -p no:cacheprovider -n 6 --dist worksteal \
      --junitxml /tmp/g/pytest_gpu_host.xml -rfE tests >/tmp/g/pytest_gpu_host.log 2>&1
    echo "exit $?" >>/tmp/g/pytest_gpu_host.log
  ) &
  suite=$!
  PEFT_BENCH_CACHE=/tmp/cache-b timeout -s INT 170 $py -m bench run scenarios --device cuda --jobs 6 \
    --out /tmp/g/shipped >/tmp/g/shipped.log 2>&1
  stamp "B: shipped run exit $?"
  $py -m bench report /tmp/g/shipped >>/tmp/g/shipped.log 2>&1
  # The address-space limit on a GPU: CUDA maps far more virtual memory than it uses.
  PEFT_BENCH_CACHE=/tmp/cache-b timeout -s INT 40 $py -m bench run scenarios/forward_latency.toml \
    --device cuda -k fp32-none --memory-limit-mb 32000 --out /tmp/g/memlimit >/tmp/g/memlimit.log 2>&1
  echo "exit $?" >>/tmp/g/memlimit.log
  tar czf "$out/shipped.tgz" -C /tmp/g shipped shipped.log memlimit memlimit.log
  stamp "B: shipped and memlimit packed; waiting for the test suite"
  wait $suite
  tar czf "$out/pytest_gpu_host.tgz" -C /tmp/g pytest_gpu_host.log pytest_gpu_host.xml
  stamp "B: test suite done: $(tail -2 /tmp/g/pytest_gpu_host.log | tr '\n' ' ')"
}
stage_C() {
  stamp "C: inductor and CUDA graphs hotswap, one case at a time"
  PEFT_BENCH_CACHE=/tmp/cache-c timeout -s INT "${TC1:-180}" $py -m bench run examples/gpu/inductor_hotswap.toml \
    examples/gpu/cudagraphs_hotswap.toml --device cuda --out /tmp/g/inductor >/tmp/g/inductor.log 2>&1
  stamp "C: inductor exit $?"
  # CUDA graphs recorded and skipped per step (CompileStats.cuda_graph_*), the re-records a swap costs.
  $py - /tmp/g/inductor <<'PY' 2>&1 | tee -a "$out/stages.log"
import sys
from bench.results.store import load
for c in load(sys.argv[1]).cases:
    graphs = [(s.index, s.op, s.compile.cuda_graph_recordings, s.compile.cuda_graph_skips, s.compile.cuda_graph_unavailable)
              for s in c.steps if s.compile is not None and (s.compile.cuda_graph_recordings is not None or s.compile.cuda_graph_unavailable)]
    if graphs:
        print(f"C: {c.case_id} {c.verdict}: (step, op, recordings, skips, unavailable) {graphs}")
PY
  $py -m bench report /tmp/g/inductor >>/tmp/g/inductor.log 2>&1
  tar czf "$out/inductor.tgz" -C /tmp/g inductor inductor.log
  stamp "C: serving replay on the 135M shape"
  PEFT_BENCH_CACHE=/tmp/cache-c timeout -s INT "${TC2:-90}" $py -m bench run examples/cpu/serving_135m.toml \
    ${SERVING_K//,/ } --device cuda --out /tmp/g/serving >/tmp/g/serving.log 2>&1
  stamp "C: serving exit $?"
  # Serving time against checking time per case (ServingRecord.serve_s / check_s and the check's parts).
  $py - /tmp/g/serving <<'PY' 2>&1 | tee -a "$out/stages.log"
import sys
from bench.results.store import load
f = lambda v: "-" if v is None else f"{v:.2f}"
for c in load(sys.argv[1]).cases:
    for sv in (s.serving for s in c.steps if s.serving is not None):
        setup_s = sv.figures and sv.figures.setup_ms / 1000
        print(f"C: {c.case_id}: serve_s {f(sv.serve_s)} setup_s {f(setup_s)} check_s {f(sv.check_s)} (load {f(sv.check_load_s)}, "
              f"responses {f(sv.check_responses_s)}, oracle {f(sv.check_oracle_s)}; {sv.reference_calls} "
              f"reference calls) wrong {sv.figures and sv.figures.wrong_responses} verdict {c.verdict}")
PY
  $py -m bench report /tmp/g/serving >>/tmp/g/serving.log 2>&1
  tar czf "$out/serving.tgz" -C /tmp/g serving serving.log
}
stage_Q() {
  stamp "Q: bitsandbytes on CUDA"
  PEFT_BENCH_CACHE=/tmp/cache-q timeout -s INT "${TQ:-45}" $py -m bench run scenarios/hotswap_precisions.toml \
    scenarios/quantized.toml -k nf4 -k int8 --device cuda --jobs 4 --out /tmp/g/quant >/tmp/g/quant.log 2>&1
  stamp "Q: exit $?"
  $py -m bench report /tmp/g/quant >>/tmp/g/quant.log 2>&1
  tar czf "$out/quant.tgz" -C /tmp/g quant quant.log
}
for s in A C Q B; do
  want $s && "stage_$s"
done
stamp "done"
