"""Worker entry point: `python -m bench.worker CASE_JSON RESULT_JSON`.

Reads the case (the expanded, serialised Case the parent wrote), runs it, writes the CaseResult atomically. Anything that
escapes the case (a bad source, a library crash) is written as an `error` result with the traceback's last
lines, so the parent can tell a reported error from a dead process.

The log (stdout and stderr) gets a phase line before each step and, through faulthandler, the Python stack
on a native crash or when the parent sends SIGUSR1 before killing a worker that timed out: bench.results.exits reads
both to say where a dead worker was.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from bench.engine.oom import is_out_of_memory, memory_limit_note
from bench.engine.sources.cache import changed_since
from bench.results.atomic import write_json_in
from bench.results.exits import PHASE_FINISHING, PHASE_MARKER, PHASE_STARTED
from bench.results.records import CaseResult, WorkerInfo
from bench.spec.cases import Case
from bench.spec.codec import to_dict
from bench.worker import inject
from bench.worker.execute import pick_device, run_case


def main(argv: list[str]) -> int:
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    case_file, out_file = Path(argv[0]), Path(argv[1])
    spec = json.loads(case_file.read_text())
    # Held from the start: the result goes into this folder even if OUT is removed and made again meanwhile.
    out_dir_fd = os.open(out_file.parent, os.O_RDONLY | os.O_DIRECTORY)
    if spec.get("device") == "cpu":  # --device cpu: pick_device() (bench.worker.execute) then sees no GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = ""

    from dataclasses import replace

    # Test-only fault injection (see bench.worker.inject): read once, here, and nowhere else.
    faults = inject.parse(os.environ.get(inject.ENV_VAR))
    inject.fire(faults, spec["scenario"], "start")
    try:
        import psutil

        process_start = psutil.Process().create_time()
    except Exception:
        process_start = None
    began_epoch_s = time.time()
    result = run_spec(spec, process_start=process_start, faults=faults)
    if result.verdict in ("fail", "error"):
        result = with_changed_cache(result, Path(spec["cache_root"]), began_epoch_s)
    print(f"{PHASE_MARKER} {PHASE_FINISHING}", flush=True)
    import torch

    # What this process really ran on (the parent asked for a job's cores under --jobs: this says it held).
    cpus = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else None
    worker = replace(
        result.worker, finished_at_epoch_s=time.time(), cpus=cpus, torch_threads=torch.get_num_threads()
    )
    result = replace(result, worker=worker)
    write_json_in(out_dir_fd, out_file.name, to_dict(result))
    return 0


def with_changed_cache(result: CaseResult, cache_root: Path, since_epoch_s: float) -> CaseResult:
    """A failed case's reason, plus the cache entries that changed under it (truncated, rewritten) while it
    ran: the library's own error about such a file names no file (issue 32)."""
    from dataclasses import replace

    changed = changed_since(cache_root, since_epoch_s)
    if not changed:
        return result
    more = f" (and {len(changed) - 1} more entries)" if len(changed) > 1 else ""
    note = f"the cache changed while the case ran: {cache_root}/{changed[0]}{more}; the next run rebuilds it"
    return replace(result, reason=f"{result.reason}; {note}" if result.reason else note)


def run_spec(spec: dict, *, process_start: float | None = None, faults: tuple = ()):
    """Run the case a case spec names and return its CaseResult; whatever escapes becomes an `error` result."""
    print(f"{PHASE_MARKER} {PHASE_STARTED}", flush=True)
    current: list[str] = []  # the label of the step running now, for the reason of an escaping exception

    def before_step(step) -> None:
        current[:] = [step.label]
        print(f"{PHASE_MARKER} {step.label}", flush=True)
        inject.fire(faults, spec["scenario"], str(step.index))

    # Picked once, here, so that a case that raises says where it ran too (it said "cpu" on a GPU: found in
    # the H200's results, whose repro scripts then set DEVICE = 'cpu'); unknown only if torch cannot import.
    device: str | None = None
    try:
        # The parent hands over the expanded case itself: the scenario file is never read again, so editing
        # it during a run changes nothing in the run.
        case = Case.from_dict(spec["case"])
        device = pick_device()
        if spec.get("device") == "cuda" and device != "cuda":
            # Asked for, not there: never a CPU run filed as a CUDA one (its timings calibrated CUDA estimates).
            raise RuntimeError(
                "--device cuda: torch sees no CUDA device here (torch.cuda.is_available() is False)"
            )
        return run_case(
            case,
            Path(spec["cache_root"]),
            device=device,
            process_start=process_start,
            trust_remote_code=bool(spec.get("trust_remote_code", False)),
            allow_pickle=bool(spec.get("allow_pickle", False)),
            require_oracles=bool(spec.get("require_oracles", False)),
            on_step=before_step,
        )
    except Exception as exc:
        tb = traceback.format_exc().strip().splitlines()
        what = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
        if is_out_of_memory(exc):
            what = f"out of memory{memory_limit_note()}: {what}"
        return CaseResult(
            case_id=spec["case_id"],
            scenario=spec["scenario"],
            scenario_file=spec["scenario_file"],
            params=spec["params"],
            verdict="error",
            reason=f"{current[0]}: {what}" if current else what,
            worker=WorkerInfo(traceback_tail=tuple(tb[-12:])),
            **({"device": device} if device else {}),
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
