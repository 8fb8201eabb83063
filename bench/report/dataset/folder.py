"""`peft-bench publish`: a dataset folder in the layout the Hugging Face Hub uses for datasets.

    README.md                          the dataset card (YAML header: configs, license, tags, pretty_name)
    data/<start date>/<run id>.parquet one per run, one fixed schema (bench.report.dataset.table)
    runs/<run id>/results.json         the run's full results
    results.schema.json                the JSON Schema of results.json (bench.results.json_schema)

Publishing into a folder that already holds a dataset adds the new runs to it (a run published again
replaces its own files: the id is the same) and rewrites the card over every run there. Every table is
built before the first file is written, and each file is written whole (temporary file, rename).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchInputError
from bench.report.dataset import card
from bench.report.dataset.table import run_table
from bench.results.atomic import write_text
from bench.results.json_schema import schema_text
from bench.results.outfiles import check_own_folder
from bench.results.runs import Run, for_publishing, in_start_order, load_runs, place_results_json

MARKER = ".peft-bench-dataset"  # says "a dataset this command wrote"; never uploaded
SCHEMA_FILE = "results.schema.json"
DATA_DIR, RUNS_DIR = "data", "runs"


@dataclass(frozen=True)
class Published:
    folder: Path
    written: tuple[Path, ...]
    runs: tuple[str, ...]  # every run the folder holds now, in start order
    rows: int


def check_dataset_folder(folder: Path) -> None:
    check_own_folder(folder, MARKER, "a dataset written by peft-bench publish")


def parquet_path(run: Run) -> str:
    return f"{DATA_DIR}/{run.date}/{run.run_id}.parquet"


def write_dataset(
    runs: list[Run],
    folder: Path,
    *,
    with_hostname: bool = False,
    license: str = "apache-2.0",
    pretty_name: str = "peft-bench results",
) -> Published:
    folder = Path(folder)
    check_dataset_folder(folder)
    runs = for_publishing(runs, with_hostname)
    tables = [(run, run_table(run, with_hostname=with_hostname)) for run in runs]
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for run, table in tables:
        written.append(_write_parquet(table, folder / parquet_path(run)))
        path = folder / RUNS_DIR / run.run_id / "results.json"
        place_results_json(path, run)
        written.append(path)
    write_text(folder / SCHEMA_FILE, schema_text())
    everything = _every_run(folder, runs)
    rows = _row_count(folder, everything)
    text = card.render(
        everything, pretty_name=pretty_name, license=license, rows=rows, with_hostname=with_hostname
    )
    write_text(folder / "README.md", text)
    write_text(folder / MARKER, "written by `peft-bench publish`; it adds runs to this folder\n")
    written += [folder / SCHEMA_FILE, folder / "README.md"]
    return Published(folder, tuple(written), tuple(r.run_id for r in everything), rows)


def _every_run(folder: Path, published: list[Run]) -> list[Run]:
    """Every run the folder holds, in start order, for the card: the runs just published as they are in
    memory (a results.json read back is the same run: its folder is named by the id its content hashes to),
    the folder's other runs read from their files. Reading back what was just written cost a second parse of
    every published case (a 454 MB run read twice)."""
    held = {run.run_id: run for run in published}
    others = [p for p in sorted((folder / RUNS_DIR).glob("*/results.json")) if p.parent.name not in held]
    for run in load_runs(others) if others else []:
        held.setdefault(run.run_id, run)
    return in_start_order(held.values())


def _write_parquet(table, path: Path) -> Path:
    import pyarrow.parquet as pq  # heavy: only when a dataset is written

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _row_count(folder: Path, runs: list[Run]) -> int:
    import pyarrow.parquet as pq  # heavy: only when a dataset is written

    total = 0
    for run in runs:
        path = folder / parquet_path(run)
        if not path.is_file():
            raise BenchInputError(
                f"runs/{run.run_id}/results.json has no data file {parquet_path(run)}: publish it again",
                source=str(folder),
            )
        total += pq.read_metadata(path).num_rows
    return total
