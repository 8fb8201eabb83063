"""The dataset card (README.md) of a published folder: the Hub's YAML header, then what the data is and how
to load it.

The header uses the Hub's dataset-card fields: `pretty_name`, `license`, `tags`, `size_categories` and
`configs` (one `default` config whose `data_files` glob takes every run's Parquet file). It is written by
hand, every string as a JSON string (valid YAML), so no YAML library is needed to publish.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass

from bench import VERDICT_RULES_VERSION
from bench.report.dataset.table import column_names
from bench.results.flat_rows import ROW_FIELDS
from bench.results.runs import Run
from bench.results.summary import counts_line

DATA_GLOB = "data/*/*.parquet"
TAGS = ("peft-bench", "benchmark", "peft", "lora", "transformers", "torch-compile")
# The Hub's size buckets, by row count.
_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))


def size_category(rows: int) -> str:
    return next((label for limit, label in _SIZES if rows < limit), "1M<n<10M")


def _q(text: str) -> str:
    return json.dumps(text)


def yaml_header(*, pretty_name: str, license: str, rows: int) -> str:
    lines = [
        "---",
        f"pretty_name: {_q(pretty_name)}",
        f"license: {_q(license)}",
        "tags:",
        *(f"- {_q(t)}" for t in TAGS),
        "size_categories:",
        f"- {_q(size_category(rows))}",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        f"    path: {_q(DATA_GLOB)}",
        "---",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class CardRun:
    """What the card says of one run: its row of the Runs table, and the start time and verdict rules that
    order and flag it. A few fields, so that the runs a folder already holds need not be read again to rewrite
    the card (bench.report.dataset.folder keeps each in runs/<id>/card.json)."""

    run_id: str
    started_at: _dt.datetime  # timezone-aware, as Run.started_at
    transformers: str | None
    peft: str | None
    torch: str | None
    device: str  # the GPU's name, else the device
    verdict_rules: int
    verdicts: str  # counts_line: "3 pass (1 unverified), 1 fail"

    @property
    def date(self) -> str:  # as Run.date: the folder its Parquet file is in
        return self.started_at.strftime("%Y-%m-%d")

    @classmethod
    def of(cls, run: Run) -> CardRun:
        r = run.results
        libs = r.environment.libraries
        return cls(
            run.run_id,
            run.started_at,
            libs.get("transformers"),
            libs.get("peft"),
            libs.get("torch"),
            r.environment.gpu or r.environment.device,
            r.verdict_rules,
            counts_line(r),
        )

    def to_json(self) -> dict:
        return {**asdict(self), "started_at": self.started_at.isoformat()}

    @classmethod
    def from_json(cls, data: dict) -> CardRun:
        """Raises KeyError, TypeError or ValueError on a record that is not one (the caller reads the run
        instead)."""
        fields = {**data, "started_at": _dt.datetime.fromisoformat(data["started_at"])}
        row = cls(**fields)
        texts = (row.run_id, row.device, row.verdicts)
        versions = (row.transformers, row.peft, row.torch)
        if (
            row.started_at.tzinfo is None
            or type(row.verdict_rules) is not int
            or not all(isinstance(t, str) for t in texts)
            or not all(v is None or isinstance(v, str) for v in versions)
        ):
            raise ValueError("not a card row")
        return row


def _run_row(run: CardRun) -> str:
    rules = str(run.verdict_rules)
    if run.verdict_rules < VERDICT_RULES_VERSION:
        rules += f" (older than {VERDICT_RULES_VERSION})"
    cells = [
        f"`{run.run_id}`",
        run.started_at.strftime("%Y-%m-%d %H:%M"),
        run.transformers or "-",
        run.peft or "-",
        run.torch or "-",
        run.device,
        rules,
        run.verdicts,
    ]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def render(runs: list[CardRun], *, pretty_name: str, license: str, rows: int, with_hostname: bool) -> str:
    """Long because: the card's text, one block per part, in the order it reads."""
    stale = [r for r in runs if r.verdict_rules < VERDICT_RULES_VERSION]
    run_cols = ", ".join(f"`{c}`" for c in column_names(with_hostname=with_hostname) if c not in ROW_FIELDS)
    body = [
        f"# {pretty_name}",
        "",
        f"Results of peft-bench runs: {len(runs)} run(s), {rows} rows. peft-bench "
        "benchmarks and verifies PEFT adapters (LoRA, IA3, AdaLoRA) used through Hugging Face Transformers, "
        "eager and `torch.compile`d: every adapter change is checked against a freshly loaded reference, "
        "and latency, memory and recompilations are recorded.",
        "",
        "## Layout",
        "",
        f"- `{DATA_GLOB}`: one Parquet file per run, `data/<start date>/<run id>.parquet`, all with the "
        "same columns;",
        "- `runs/<run id>/results.json`: the run's full results file (every record, the raw timing samples);",
        "- `results.schema.json`: the JSON Schema of those files.",
        "",
        "## Columns",
        "",
        "One row per case, step and metric (the tidy table of `peft-bench report --table`): "
        + ", ".join(f"`{c}`" for c in ROW_FIELDS)
        + f". Then the run's own columns: {run_cols}. `<library>_version` is the installed version "
        "(null: not installed); `params_json` holds every matrix value of the case; `verdict_rules` is the "
        "version of the rules its verdicts were judged under. Every case has one row with metric `case` "
        "(value 1), also a case that errored or did not run: count cases by verdict from those rows.",
        "",
        "## Loading",
        "",
        "```python",
        "import pandas as pd",
        'df = pd.read_parquet("data")  # or a single data/<date>/<run id>.parquet',
        "",
        "from datasets import load_dataset",
        f'ds = load_dataset("parquet", data_files="{DATA_GLOB}", split="train")',
        "```",
        "",
        "## Runs",
        "",
        "| run | started (UTC) | transformers | peft | torch | device | verdict rules | verdicts |",
        "|---|---|---|---|---|---|---|---|",
        *(_run_row(r) for r in runs),
        "",
    ]
    if stale:
        body += [
            f"{len(stale)} run(s) were judged under older verdict rules than the current "
            f"{VERDICT_RULES_VERSION}: compare verdicts only between runs of the same `verdict_rules`.",
            "",
        ]
    if not with_hostname:
        body += ["The machines' host names are left out.", ""]
    return yaml_header(pretty_name=pretty_name, license=license, rows=rows) + "\n" + "\n".join(body)
