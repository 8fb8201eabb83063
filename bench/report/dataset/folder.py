"""`peft-bench publish`: a dataset folder in the layout the Hugging Face Hub uses for datasets.

    README.md                          the dataset card (YAML header: configs, license, tags, pretty_name)
    data/<start date>/<run id>.parquet one per run, one fixed schema (bench.report.dataset.table)
    runs/<run id>/results.json         the run's full results
    runs/<run id>/card.json            what the card says of it, and the sha256 of that results.json
    results.schema.json                the JSON Schema of results.json (bench.results.json_schema)

Publishing into a folder that already holds a dataset adds the new runs to it (a run published again
replaces its own files: the id is the same) and rewrites the card over every run there. Every table is
built, and every run already there checked, before the first file is written, and each file is written
whole (temporary file, rename): a refused publish leaves the folder as it was.

The card's rows of the runs the folder already held come from their card.json, checked against their
results.json by its sha256, so that publishing one more run does not parse every earlier one again (a
20,000-case run is a 454 MB results.json; its parse took longer than the rest of a publish). A run without
a card.json, or whose results.json no longer has the recorded hash, is read whole and its card.json
written again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchInputError
from bench.report.dataset import card
from bench.report.dataset.card import CardRun
from bench.report.dataset.table import run_table
from bench.results.atomic import replace_atomically, write_text
from bench.results.columnar import fingerprint  # the sha256 a columnar copy is matched by
from bench.results.json_schema import schema_text
from bench.results.outfiles import check_own_folder
from bench.results.runs import Run, for_publishing, in_start_order, load_runs, place_results_json

MARKER = ".peft-bench-dataset"  # says "a dataset this command wrote"; never uploaded
SCHEMA_FILE = "results.schema.json"
DATA_DIR, RUNS_DIR = "data", "runs"
CARD_FILE = "card.json"  # beside each run's results.json


@dataclass(frozen=True)
class Published:
    folder: Path
    written: tuple[Path, ...]
    runs: tuple[str, ...]  # every run the folder holds now, in start order
    rows: int


def check_dataset_folder(folder: Path) -> None:
    check_own_folder(folder, MARKER, "a dataset written by peft-bench publish")


def parquet_path(run: Run | CardRun) -> str:
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
    # Everything that can refuse the publish is decided before the first file is written: a data file
    # deleted by hand from the folder used to be found after the new run's files were in place.
    everything, unindexed = _every_run(folder, runs)
    new_rows = {run.run_id: table.num_rows for run, table in tables}
    rows = _row_count(folder, everything, new_rows)
    text = card.render(
        everything, pretty_name=pretty_name, license=license, rows=rows, with_hostname=with_hostname
    )
    folder.mkdir(parents=True, exist_ok=True)
    # The marker first: a publish stopped part way (a full disk) leaves a folder the next publish may finish.
    write_text(folder / MARKER, "written by `peft-bench publish`; it adds runs to this folder\n")
    written = []
    for run, table in tables:
        written.append(_write_parquet(table, folder / parquet_path(run)))
        path = folder / RUNS_DIR / run.run_id / "results.json"
        place_results_json(path, run)
        written += [path, _write_card_json(path, CardRun.of(run))]
    written += [_write_card_json(path, row) for path, row in unindexed]
    write_text(folder / SCHEMA_FILE, schema_text())
    write_text(folder / "README.md", text)
    written += [folder / SCHEMA_FILE, folder / "README.md"]
    return Published(folder, tuple(written), tuple(r.run_id for r in everything), rows)


def _every_run(folder: Path, published: list[Run]) -> tuple[list[CardRun], list[tuple[Path, CardRun]]]:
    """What the card says of every run the folder holds, in start order: the runs just published from memory
    (a results.json read back is the same run: its folder is named by the id its content hashes to), the
    folder's other runs from their card.json where it matches their results.json (_indexed), else read from
    their files; the second list: those results.json files with their rows, whose card.json is to be written
    again. Reads only."""
    held = {run.run_id: CardRun.of(run) for run in published}
    unread, mended = [], []
    for path in sorted((folder / RUNS_DIR).glob("*/results.json")):
        if path.parent.name in held:
            continue
        row = _indexed(path)
        if row is None:
            unread.append(path)
        else:
            held[row.run_id] = row
    for run in load_runs(unread) if unread else []:
        row = held.setdefault(run.run_id, CardRun.of(run))
        # Only in the run's own folder: a results.json put under another id's folder stays unindexed.
        path = folder / RUNS_DIR / run.run_id / "results.json"
        if Path(run.source) == path:
            mended.append((path, row))
    return in_start_order(held.values()), mended


def _write_card_json(results_json: Path, row: CardRun) -> Path:
    path = results_json.with_name(CARD_FILE)
    record = {"results_sha256": fingerprint(results_json)["sha256"], "card": row.to_json()}
    write_text(path, json.dumps(record, indent=1) + "\n")
    return path


def _indexed(results_json: Path) -> CardRun | None:
    """The run's card row from its card.json, or None where there is none, it cannot be read, it names
    another run than its folder does, or it was written for other bytes than the results.json there now."""
    try:
        record = json.loads(results_json.with_name(CARD_FILE).read_text())
        row = CardRun.from_json(record["card"])
        recorded = record["results_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if row.run_id != results_json.parent.name or recorded != fingerprint(results_json)["sha256"]:
        return None
    return row


def _write_parquet(table, path: Path) -> Path:
    import pyarrow.parquet as pq  # heavy: only when a dataset is written

    # The atomic writer names the file in a full disk's error (pyarrow's own names none).
    replace_atomically(path, lambda tmp: pq.write_table(table, tmp))
    return path


def _row_count(folder: Path, runs: list[CardRun], new_rows: dict[str, int]) -> int:
    """Rows of every run's data file: the runs being published from their tables (`new_rows`), the others
    from their files' metadata; a run whose data file is gone is refused."""
    import pyarrow.parquet as pq  # heavy: only when a dataset is written

    total = 0
    for run in runs:
        if run.run_id in new_rows:
            total += new_rows[run.run_id]
            continue
        path = folder / parquet_path(run)
        if not path.is_file():
            raise BenchInputError(
                f"runs/{run.run_id}/results.json has no data file {parquet_path(run)}: publish it again",
                source=str(folder),
            )
        total += pq.read_metadata(path).num_rows
    return total
