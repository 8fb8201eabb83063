"""`peft-bench publish RESULTS... --to DIR|hf://datasets/OWNER/NAME`: a dataset others can load."""

from __future__ import annotations

import argparse
import gc
import tempfile
from pathlib import Path

from bench.cli.paths import check_out_folder
from bench.errors import BenchInputError
from bench.report.dataset import hub
from bench.report.dataset.folder import MARKER, check_dataset_folder, write_dataset
from bench.results.runs import load_runs, spool_beside
from bench.results.store import loaded_frozen

NAME = "publish"


def register(sub) -> None:
    p = sub.add_parser(
        NAME,
        help="write runs as a dataset (Parquet per run, a dataset card), to a folder or the Hugging Face Hub",
        description="Write a dataset folder in the Hugging Face Hub's layout: data/<date>/<run id>.parquet "
        "(the tidy table plus the run's environment, library versions and verdict rules), "
        "runs/<run id>/results.json, results.schema.json and a dataset card (README.md). A folder that "
        "already holds one gets the new runs added. hf://datasets/OWNER/NAME uploads the folder (needs "
        "huggingface_hub and a token); give a folder too to keep the history there. The machine's host name "
        "is left out unless --with-hostname.",
    )
    p.add_argument("results", nargs="+", type=Path, help="results.json files or folders holding one")
    p.add_argument(
        "--to",
        action="append",
        required=True,
        metavar="DIR|hf://datasets/OWNER/NAME",
        help="where to publish (repeatable: a folder and a Hub dataset)",
    )
    p.add_argument("--with-hostname", action="store_true", help="keep the machine's host name (a column)")
    p.add_argument("--license", default="apache-2.0", help="the card's license id (default apache-2.0)")
    p.add_argument("--pretty-name", default="peft-bench results", help="the card's title")


def _targets(values: list[str]) -> tuple[list[Path], list[hub.HubTarget]]:
    folders, hubs = [], []
    for value in values:
        if hub.is_hub(value):
            hubs.append(hub.parse_target(value))
        elif not value.strip():
            raise BenchInputError("--to: empty path (use . for the current folder)")
        else:
            folders.append(Path(value))
    if len(folders) > 1 or len(hubs) > 1:
        raise BenchInputError("--to: at most one folder and one hf:// dataset")
    return folders, hubs


def run(args: argparse.Namespace) -> int:
    folders, hubs = _targets(args.to)
    for folder in folders:  # every check before anything is read or written
        check_out_folder(folder)
        check_dataset_folder(folder)
    tokens = [hub.hub_token(t) for t in hubs]
    with tempfile.TemporaryDirectory(prefix="peft-bench-publish-") as tmp:
        folder = folders[0] if folders else Path(tmp) / "dataset"
        # Each run's text is spooled as its id is hashed, and moved into the dataset: encoded once, not twice.
        with spool_beside(folder, args.with_hostname) as spool:
            # Kept to the end: frozen, out of the garbage collector's way (bench.results.store).
            runs = loaded_frozen(load_runs, args.results, spool)
            try:
                published = write_dataset(
                    runs,
                    folder,
                    with_hostname=args.with_hostname,
                    license=args.license,
                    pretty_name=args.pretty_name,
                )
            finally:
                gc.unfreeze()
        for rid in (r.run_id for r in runs):
            print(f"peft-bench: run {rid}")
        if folders:
            print(f"peft-bench: dataset of {len(published.runs)} run(s), {published.rows} rows in {folder}")
        for target, token in zip(hubs, tokens, strict=True):
            message = f"peft-bench publish: {len(runs)} run(s)"
            url = hub.upload(folder, target, token, ignore=(MARKER,), message=message)
            print(f"peft-bench: uploaded {folder if folders else 'the dataset'} to {target} ({url})")
    return 0
