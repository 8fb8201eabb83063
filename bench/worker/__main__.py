"""Worker entry point: `python -m bench.worker CASE_JSON RESULT_JSON`.

Reads the case (scenario file + matrix values), runs it, writes the CaseResult atomically. Anything that
escapes the case (a bad source, a library crash) is written as an `error` result with the traceback's last
lines, so the parent can tell a reported error from a dead process.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path


def main(argv: list[str]) -> int:
    case_file, out_file = Path(argv[0]), Path(argv[1])
    spec = json.loads(case_file.read_text())
    try:
        import psutil

        process_start = psutil.Process().create_time()
    except Exception:
        process_start = None

    from bench.atomic import write_json
    from bench.records import CaseResult, to_dict

    try:
        from bench.cases import expand
        from bench.scenario.loader import load_scenario
        from bench.worker.execute import run_case

        scenario = load_scenario(spec["scenario_file"])
        case = next(c for c in expand(scenario) if c.params == spec["params"])
        result = run_case(case, Path(spec["cache_root"]), process_start=process_start)
    except Exception as exc:
        tb = traceback.format_exc().strip().splitlines()
        result = CaseResult(
            case_id=spec["case_id"],
            scenario=spec["scenario"],
            scenario_file=spec["scenario_file"],
            params=spec["params"],
            verdict="error",
            reason=f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}",
            worker={"traceback_tail": tb[-12:]},
        )
    payload = to_dict(result)
    payload["worker"] = {**payload.get("worker", {}), "finished_at_epoch_s": time.time()}
    write_json(out_file, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
