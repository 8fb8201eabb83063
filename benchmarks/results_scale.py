"""How report, gate, compare, merge and `run --resume` scale with the number of cases in a results file.

Builds results files of N cases (copies of a shipped run's cases, each copy under its own scenario name so
that every case id differs; results.json plus its columnar copy, as `save` writes them), then runs each command
as its own process and records its wall time and peak RSS (os.wait4's rusage of that process), n repeats, with
the machine's load before and after each size.

    python benchmarks/results_scale.py --sizes 1000 10000 20000 --repeats 3 --out reports/performance

Writes results_scale.json and results_scale.md into --out (with --append, this run's sizes are added to the
ones already there, each with its --label). Files are built in a temporary folder, laid out as `save` writes
them (bench.results.writing: about 22 KB per case, 20,000 cases about 450 MB each; the run builds four:
two whole files and two halves for merge). Each command gets --timeout-s: one that has not answered by then is
killed (its process group) and recorded as "no answer in N s", with its peak RSS so far.

gate and compare read two files: the baseline (a) and the current run (b). By default b is a byte copy of a,
so every step's timing samples equal the baseline's and every U test meets only ties. `--current-from
RESULTS.json` builds b from another run of the same scenarios instead (the same case ids in the same order),
as a user's gate sees it: a run against a baseline taken earlier.

    python -m bench run scenarios --tag gate --out /tmp/run2     # the shipped baseline's five cases, again
    python benchmarks/results_scale.py --sizes 20000 --commands gate compare --current-from /tmp/run2/results.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results import columnar  # noqa: E402
from bench.results.atomic import replace_atomically  # noqa: E402
from bench.results.environment import cpu_name  # noqa: E402
from bench.results.records import CaseResult  # noqa: E402
from bench.results.store import load  # noqa: E402
from bench.results.writing import encode_case, record_row  # noqa: E402
from bench.spec.codec import from_dict, to_dict  # noqa: E402

SOURCE = REPO / "reports" / "baseline" / "results.json"
COMMANDS = ("report", "gate", "compare", "merge", "resume")


HEAD_FIELDS = (
    "schema_version",
    "suite_version",
    "created_at",
    "environment",
    "scenario_set",
)  # before `cases`
NAME = "@@scenario@@"  # a placeholder in each source case's text, replaced by the copy's scenario name


def _templates(cases: tuple[CaseResult, ...]) -> list[tuple]:
    """Each source case's columnar row as a save makes it (bench.results.writing.record_row: its JSON text,
    judge column, results.csv rows and summary lines among them), with its scenario name a placeholder, so
    that a copy is one str.replace per text, not a parse and a dump."""
    out = []
    for case in cases:
        c = json.loads(json.dumps(to_dict(case)))
        c["case_id"] = NAME + c["case_id"][len(c["scenario"]) :]
        if c.get("case"):
            c["case"]["scenario"]["name"] = NAME
        c["scenario"] = NAME
        record = from_dict(CaseResult, c)
        out.append(record_row(record, encode_case(record)))
    return out


def _copies(templates: list[tuple], n: int, start: int) -> Iterator[tuple]:
    """n cases' rows: the source's cases in turn, copy i under the scenario name `<scenario>-<i>`."""
    for i in range(start, start + n):
        name = f"s{i:06d}-{_source_names[i % len(templates)]}"
        yield tuple(v.replace(NAME, name) if isinstance(v, str) else v for v in templates[i % len(templates)])


_source_names: list[str] = []
_RECORD = columnar.COLUMNS.index("record")


def build(folder: Path, n: int, *, source: Path = SOURCE, start: int = 0) -> Path:
    """folder/results.json (+ results.parquet) holding n copied cases; streamed, never all in memory."""
    # Through the records, so that the copies hold every field save writes today: a source saved before a
    # field was added (a defaulted one, as loading fills it) would otherwise give files that no current run
    # writes.
    loaded = load(source)
    _source_names[:] = [c.scenario for c in loaded.cases]
    templates = _templates(loaded.cases)
    doc = to_dict(loaded)
    del doc["cases"]
    doc["scenario_set"] = []  # every copy is its own scenario; merge compares the sets, so keep them equal
    folder.mkdir(parents=True, exist_ok=True)
    # The layout of bench.results.writing.write_json: file-level fields indented, then one case per line.
    head = {k: v for k, v in doc.items() if k in HEAD_FIELDS}
    tail = {k: v for k, v in doc.items() if k not in HEAD_FIELDS}
    with open(folder / "results.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(head, indent=1)[:-2] + ',\n "cases": [')
        for i, row in enumerate(_copies(templates, n, start)):
            f.write(("\n" if i == 0 else ",\n") + row[_RECORD])
        f.write(("\n ]" if n else "]") + (",\n" + json.dumps(tail, indent=1)[2:] if tail else "\n}") + "\n")

    def dump(tmp: Path) -> None:
        with columnar.Sink(tmp) as sink:
            for row in _copies(templates, n, start):
                sink.add(row)
            sink.finish(doc, folder / "results.json")

    replace_atomically(folder / columnar.COLUMNAR_FILE, dump)
    return folder


def _copy(src: Path, dst: Path) -> None:
    """A copy that keeps the files' times (copy2), so the columnar copy still matches its results.json."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", columnar.COLUMNAR_FILE):
        shutil.copy2(src / name, dst / name)


def _measure(argv: list[str], cwd: Path, timeout_s: float) -> dict:
    """One command as its own process (and session): wall time, peak RSS and CPU from os.wait4. Past
    timeout_s its process group is killed and the figure says so (timed_out); nothing waits forever."""
    # This checkout first; a PYTHONPATH given is kept after it (another library version to measure with).
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout_s, kill)
    timer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    timer.cancel()
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=30)
    text = out[0] if out else b""
    return {
        "wall_s": wall,
        "timed_out": fired.is_set(),
        "timeout_s": timeout_s,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,  # the process's own CPU time: less moved by the load
        "exit": proc.returncode,
        "output_bytes": len(text),
        "output_tail": text[-300:].decode(errors="replace"),
    }


def _argv(command: str, tmp: Path) -> list[str]:
    py = [sys.executable, "-m", "bench"]
    a, b = tmp / "a", tmp / "b"
    if command == "report":
        return [*py, "report", str(a), "--out", str(tmp / "report")]
    if command == "gate":
        return [*py, "gate", str(b), "--baseline", str(a / "results.json")]
    if command == "compare":
        return [*py, "compare", str(a), str(b)]
    if command == "merge":
        return [*py, "merge", str(tmp / "merged"), str(tmp / "half1"), str(tmp / "half2"), "--overwrite"]
    return [*py, "run", "--resume", str(a), "-q"]


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def same_cases(source: Path, other: Path) -> None:
    """`other` must hold the cases of `source` (the same ids, in the same order), so that copy i of one is
    copy i of the other; SystemExit naming both files where it does not."""
    a, b = [c.case_id for c in load(source).cases], [c.case_id for c in load(other).cases]
    if a != b:
        raise SystemExit(
            f"--current-from {other}: its cases {b} are not those of {source} ({a}), in that order: run the "
            "same scenarios (the shipped baseline: `python -m bench run scenarios --tag gate`)"
        )


def run_size(
    n: int,
    repeats: int,
    commands: tuple[str, ...],
    tmp: Path,
    slow_s: float,
    timeout_s: float,
    current_from: Path | None = None,
) -> dict:
    if set(commands) - {"merge"}:
        build(tmp / "a", n)
        if current_from is None:
            _copy(tmp / "a", tmp / "b")
        else:
            build(tmp / "b", n, source=current_from)
    if "merge" in commands:
        build(tmp / "half1", n // 2)
        build(tmp / "half2", n - n // 2, start=n // 2)
    size = (
        sum((tmp / h / "results.json").stat().st_size for h in ("half1", "half2"))
        if "merge" in commands
        else 0
    )
    size = (tmp / "a" / "results.json").stat().st_size if (tmp / "a").exists() else size
    out: dict = {"cases": n, "results_json_bytes": size, "load_before": _loadavg(), "commands": {}}
    for command in commands:
        runs = []
        for _ in range(repeats):
            runs.append(_measure(_argv(command, tmp), REPO, timeout_s))
            if runs[-1]["timed_out"] or runs[-1]["wall_s"] > slow_s:
                break  # one slow figure is enough to say so; repeating it would take the machine for long
        walls = [r["wall_s"] for r in runs]
        out["commands"][command] = {
            "n": len(runs),
            "wall_s_median": statistics.median(walls),
            "wall_s_min": min(walls),
            "wall_s_max": max(walls),
            "timed_out": sum(r["timed_out"] for r in runs),
            "timeout_s": timeout_s,
            "peak_rss_bytes_max": max(r["peak_rss_bytes"] for r in runs),
            "cpu_s_median": statistics.median(r["cpu_s"] for r in runs),
            "exit_codes": sorted({r["exit"] for r in runs}),
            "output_bytes_max": max(r["output_bytes"] for r in runs),
            "last_output_tail": runs[-1]["output_tail"],
        }
    out["load_after"] = _loadavg()
    for name in ("a", "b", "half1", "half2", "merged", "report"):
        shutil.rmtree(tmp / name, ignore_errors=True)
    return out


def _wall(r: dict) -> str:
    if r.get("timed_out"):
        return f"no answer in {r['timeout_s']:.0f} s (killed)"
    return f"{r['wall_s_median']:.2f} [{r['wall_s_min']:.2f}, {r['wall_s_max']:.2f}]"


def _cpu(r: dict) -> str:
    return f"{r['cpu_s_median']:.2f}" if "cpu_s_median" in r else "-"  # not recorded before it existed


MEASURED_LIBRARIES = ("matplotlib", "numpy", "pyarrow", "orjson")  # what the commands' own time depends on


def _libraries() -> dict[str, str]:
    """The versions the measured commands import: they run with this checkout first on the path and any
    PYTHONPATH given after it, as this process does (_measure)."""
    import importlib.metadata

    out = {}
    for name in MEASURED_LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _taken(size: dict) -> str:
    libs = size.get("libraries")  # not recorded before it existed
    mpl = f" [matplotlib {libs['matplotlib']}]" if libs and "matplotlib" in libs else ""
    cpu = f" [{size['cpu']}]" if size.get("cpu") else ""  # not recorded before it existed
    return f"{size.get('note', '')}{mpl}{cpu}".strip()


def markdown(doc: dict) -> str:
    lines = [
        "# Results-file scale: report, gate, compare, merge, run --resume",
        "",
        f"Command: `{doc['command']}`  ",
        f"Machine: {doc['machine']}; Python {doc['python']}; taken {doc['started_at']}.  ",
        "Each figure is one process (`python -m bench ...`): wall time median [min, max] over n runs, and the "
        "largest peak RSS and the median CPU time, user + system (os.wait4). Load: /proc/loadavg before and after each size. "
        f"{doc['load_note']}",
        "",
        "| cases | results.json MB | command | n | wall s median [min, max] | CPU s median | peak RSS MiB | exit "
        "| load before -> after | taken |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in doc["sizes"]:
        for command, r in size["commands"].items():
            lines.append(
                f"| {size['cases']} | {size['results_json_bytes'] / 1e6:.0f} | {command} | {r['n']} | "
                f"{_wall(r)} | "
                f"{_cpu(r)} | "
                f"{r['peak_rss_bytes_max'] / 2**20:.0f} | {','.join(map(str, r['exit_codes']))} | "
                f"{size['load_before'][0]:.1f} -> {size['load_after'][0]:.1f} | {_taken(size)} |"
            )
    lines += ["", *doc.get("notes", [])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 20000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--commands", nargs="+", choices=COMMANDS, default=list(COMMANDS))
    p.add_argument("--out", type=Path, default=REPO / "reports" / "performance")
    p.add_argument("--tmp", type=Path, help="where to build the files (default: a temporary folder)")
    p.add_argument("--slow-s", type=float, default=120.0, help="stop repeating a command slower than this")
    p.add_argument("--note", action="append", default=[], help="a line for the report (e.g. what else ran)")
    p.add_argument(
        "--timeout-s", type=float, default=600.0, help="kill a command that has not answered by then"
    )
    p.add_argument("--label", default="", help="what this run measured (the table's `taken` column)")
    p.add_argument("--append", action="store_true", help="add this run's sizes to those already in --out")
    p.add_argument(
        "--current-from",
        type=Path,
        help="build gate's and compare's current file from this other run of the baseline's scenarios "
        "(default: a byte copy of the baseline file)",
    )
    args = p.parse_args(argv)
    if args.current_from is not None:
        same_cases(SOURCE, args.current_from)
    run = {
        "command": " ".join(["python benchmarks/results_scale.py", *(argv or sys.argv[1:])]),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu_name()}), {platform.platform()}",
        "python": platform.python_version(),
        "libraries": _libraries(),
        "load_note": "Other processes shared the machine: see the load columns.",
        "notes": args.note,
    }
    sizes = []
    if args.tmp is not None:
        args.tmp.mkdir(parents=True, exist_ok=True)  # a folder named for this run, made here
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for n in args.sizes:
            size = run_size(
                n,
                args.repeats,
                tuple(args.commands),
                Path(tmp),
                args.slow_s,
                args.timeout_s,
                args.current_from,
            )
            if args.current_from is not None:
                size["current_from"] = str(args.current_from)
            size["libraries"] = run["libraries"]
            size["cpu"] = cpu_name()  # per row: appended runs may come from VMs of one kind but other CPUs
            sizes.append({**size, "note": args.label} if args.label else size)
            print(json.dumps(sizes[-1]["commands"], indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results_scale.json"
    doc = {**run, "sizes": sizes}
    if args.append and path.exists():
        old = json.loads(path.read_text())
        runs = old.get("runs") or [{k: old[k] for k in ("command", "started_at") if k in old}]
        doc = {
            **run,
            "notes": [*old.get("notes", []), *args.note],
            "sizes": [*old["sizes"], *sizes],
            "runs": [*runs, run],
        }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    (args.out / "results_scale.md").write_text(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
