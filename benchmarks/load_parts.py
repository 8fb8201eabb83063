"""What loading a large results file costs per case, part by part: the floor under `report`'s load.

A report reads every case as frozen records (bench.results.two_builders: this process builds the first row
groups, a spawned helper the last ones and sends them back pickled). This times each part on the same cases,
in this one process, the collector off as in a load, n rounds, median [min, max] per case:

- `read`: the columnar copy's `record` column read (pyarrow, one row group at a time);
- `parse_orjson` / `parse_json`: each case's JSON parsed, by orjson from the column's buffer (what a load does
  where orjson is installed) and by the json module from a str per case;
- `build`: the parsed data made into CaseResult records (bench.spec.codec);
- `pickle_dump` / `pickle_load`: those records pickled, as the helper sends them, and unpickled, as the
  reader receives them.

    python benchmarks/load_parts.py --cases 2048 --rounds 5 --out /tmp/load_parts.json

The cases are copies of the shipped baseline's, made as benchmarks/results_scale.py makes them (--results
reads a folder of yours instead: a results.json with its results.parquet). Not a test: figures for
reports/performance/results_scale.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench.results import columnar, fastjson  # noqa: E402
from bench.results.environment import cpu_name  # noqa: E402
from bench.results.records import CaseResult  # noqa: E402
from bench.spec.codec import from_dict  # noqa: E402

PARTS = ("read", "parse_orjson", "parse_json", "build", "pickle_dump", "pickle_load")


def one_round(path: Path, groups: int) -> dict[str, float]:
    """Seconds per part over the first `groups` row groups of the columnar copy at `path`."""
    import pyarrow.parquet as pq

    took = dict.fromkeys(PARTS, 0.0)
    cases = 0
    for group in range(groups):
        t = time.perf_counter()
        column = pq.ParquetFile(path).read_row_group(group, columns=["record"]).column(0)
        took["read"] += time.perf_counter() - t
        datas = []
        t = time.perf_counter()
        for chunk in column.chunks:
            datas += columnar._parsed_column(chunk)
        took["parse_orjson" if fastjson.orjson is not None else "parse_json"] += time.perf_counter() - t
        if fastjson.orjson is not None:
            texts = column.to_pylist()
            t = time.perf_counter()
            for text in texts:
                json.loads(text)
            took["parse_json"] += time.perf_counter() - t
        t = time.perf_counter()
        records = [from_dict(CaseResult, d) for d in datas]
        took["build"] += time.perf_counter() - t
        t = time.perf_counter()
        blob = pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
        took["pickle_dump"] += time.perf_counter() - t
        t = time.perf_counter()
        pickle.loads(blob)
        took["pickle_load"] += time.perf_counter() - t
        cases += len(records)
        del datas, records, blob
    return {part: s / cases * 1e3 for part, s in took.items()} | {"cases": cases}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=2048, help="cases to time (whole row groups of 512)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--results", type=Path, help="a results folder with its columnar copy (default: copies)")
    ap.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = ap.parse_args(argv)
    if args.cases < 1 or args.rounds < 1:
        ap.error("--cases and --rounds must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.results
        if folder is None:
            import results_scale

            folder = results_scale.build(Path(tmp) / "copies", args.cases)
        col = columnar.read(folder / "results.json")
        if col is None:
            ap.error(f"{folder}: no columnar copy matching its results.json (results.parquet)")
        sizes = col.row_group_rows()
        groups, total = 0, 0
        while groups < len(sizes) and total < args.cases:
            total += sizes[groups]
            groups += 1
        load_before = os.getloadavg()[0]
        collecting = gc.isenabled()
        gc.disable()
        try:
            rounds = [one_round(col.path, groups) for _ in range(args.rounds)]
        finally:
            if collecting:
                gc.enable()
        load_after = os.getloadavg()[0]
    figures = {
        part: {
            "ms_per_case_median": statistics.median(r[part] for r in rounds),
            "ms_per_case_min": min(r[part] for r in rounds),
            "ms_per_case_max": max(r[part] for r in rounds),
        }
        for part in PARTS
    }
    env = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "orjson": getattr(fastjson.orjson, "__version__", None),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }
    print(
        f"{rounds[0]['cases']} cases, n = {args.rounds} rounds, {env['cpu']}, loadavg {load_before:.2f} -> {load_after:.2f}"
    )
    for part, f in figures.items():
        print(
            f"  {part:13s} {f['ms_per_case_median']:.3f} ms a case "
            f"[{f['ms_per_case_min']:.3f}, {f['ms_per_case_max']:.3f}]"
        )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "command": " ".join(sys.argv),
                    "cases": rounds[0]["cases"],
                    "rounds": args.rounds,
                    "environment": env,
                    "parts": figures,
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
