"""`peft-bench publish`: a dataset folder in the Hub's layout from real runs, loadable with pandas and datasets,
with a card whose YAML the Hub reads, no host name unless asked, and an upload through huggingface_hub to a
local fake Hub (tests/report/fake_hub.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from bench.errors import BenchInputError
from bench.report.dataset import hub
from bench.results.frames import frame
from bench.results.store import load, save
from tests.conftest import REPO
from tests.report.fake_hub import Hub, serve

COMPAT = sorted((REPO / "reports/compat").glob("transformers-*"))
# A run judged under verdict rules 1 (the shipped compat runs are current): the card must say so.
OLD_RULES = REPO / "tests/fixtures/results/compat-rules-1"
BASELINE = REPO / "reports/baseline"
HOST = "bench-host-7f3a9c"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from bench.cli.main import main

    out = tmp_path_factory.mktemp("ds") / "dataset"
    assert main(["publish", *map(str, [OLD_RULES, *COMPAT, BASELINE]), "--to", str(out)]) == 0
    return out


def _card(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def test_the_layout_is_the_hubs(dataset):
    runs = [load(p) for p in [OLD_RULES, *COMPAT, BASELINE]]
    parquet = sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*.parquet"))
    assert len(parquet) == len(runs)
    for path in parquet:
        top, date, name = path.split("/")
        run = name.removesuffix(".parquet")
        assert top == "data" and name.startswith(date.replace("-", ""))
        assert (dataset / "runs" / run / "results.json").is_file()
    assert (dataset / "results.schema.json").is_file()
    meta, body = _card(dataset)
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/*/*.parquet"}]}
    ]
    assert meta["license"] == "apache-2.0" and meta["pretty_name"] == "peft-bench results"
    assert "peft-bench" in meta["tags"] and meta["size_categories"] == ["1K<n<10K"]
    assert body.count("\n| `2026") == len(runs)  # one row per run in the card
    assert "judged under older verdict rules" in body


def test_the_card_reads_as_a_hub_dataset_card(dataset):
    from huggingface_hub import DatasetCard

    card = DatasetCard((dataset / "README.md").read_text())
    assert card.data.pretty_name == "peft-bench results" and card.data.license == "apache-2.0"
    assert card.data.to_dict()["configs"][0]["data_files"][0]["path"] == "data/*/*.parquet"


def test_pandas_reads_every_run_with_its_run_columns(dataset):
    df = pd.read_parquet(dataset / "data")
    for source in [OLD_RULES, *COMPAT, BASELINE]:
        results = load(source)
        rid = next(
            p.parent.name
            for p in (dataset / "runs").glob("*/results.json")
            if load(p).created_at == results.created_at
        )
        mine = df[df.run_id == rid]
        tidy = frame(results)
        assert len(mine) == len(tidy) > 0
        assert sorted(mine.metric) == sorted(tidy.metric)
        assert mine["value"].sum() == pytest.approx(tidy["value"].astype(float).sum())
        assert set(mine.transformers_version) == {results.environment.libraries["transformers"]}
        assert set(mine.peft_version) == {results.environment.libraries["peft"]}
        assert set(mine.verdict_rules) == {results.verdict_rules}
        verdicts = {c.case_id: c.verdict for c in results.cases}
        assert all(verdicts[c] == v for c, v in zip(mine.case_id, mine.verdict, strict=True))
        assert json.loads(mine.params_json.iloc[0]) == results.cases[0].params or len(results.cases) > 1
    assert "hostname" not in df.columns


@pytest.mark.parametrize("source", [OLD_RULES, BASELINE, REPO / "reports/serving-cpu"], ids=lambda p: p.name)
def test_the_tables_rows_are_the_tidy_frames_cell_for_cell(source):
    """The dataset's row columns are built without pandas (row_columns); they must be the tidy frame's rows
    (results.csv's), in its order, each cell as its Arrow column holds it."""
    from bench.report.dataset.table import row_columns

    results = load(source)
    tidy = frame(results)
    mine = row_columns(results)
    assert len(mine["case_id"]) == len(tidy) > 0
    for name in mine:
        if name == "step":
            expected = [None if pd.isna(v) else int(v) for v in tidy[name]]
        elif name == "value":
            expected = [float(v) for v in tidy[name]]
        else:
            expected = [
                None if v is None or (isinstance(v, float) and v != v) else str(v) for v in tidy[name]
            ]
        assert mine[name] == expected, name
    assert {type(v) for v in mine["verdict"]} == {str}  # the verdict's text, not its enum


def test_datasets_loads_the_folder_as_one_table(dataset, tmp_path):
    from datasets import load_dataset

    ds = load_dataset(
        "parquet",
        data_files=str(dataset / "data/*/*.parquet"),
        split="train",
        cache_dir=str(tmp_path / "cache"),
    )
    total = sum(pq.read_metadata(p).num_rows for p in dataset.rglob("*.parquet"))
    assert ds.num_rows == total
    assert ds.features["value"].dtype == "float64" and ds.features["step"].dtype == "int64"
    # Each published run's own transformers, read from its results (the compat matrix gains a row per release).
    published = {load(p).environment.libraries["transformers"] for p in [OLD_RULES, *COMPAT, BASELINE]}
    assert {"5.23.0", "5.24.0", "5.25.0"} <= published
    assert set(ds.unique("transformers_version")) == published


def test_publishing_again_adds_runs_and_replaces_its_own(tmp_path, cli):
    out = tmp_path / "ds"
    assert cli("publish", COMPAT[0], "--to", out).returncode == 0
    first = {p.relative_to(out) for p in out.rglob("*") if p.is_file()}
    assert cli("publish", COMPAT[0], COMPAT[1], "--to", out).returncode == 0
    files = {p.relative_to(out) for p in out.rglob("*") if p.is_file()}
    assert first < files and len(list(out.rglob("*.parquet"))) == 2
    assert _card(out)[1].count("\n| `2026") == 2


def test_the_card_reads_back_only_the_runs_it_did_not_just_write(tmp_path, monkeypatch):
    """The runs just published go into the card as they are in memory (each published run was parsed twice
    before: a 454 MB run read again for one row); the folder's other runs come from their card.json, checked
    against their results.json's sha256, and are read from their files only where that record is missing,
    names another run or was written for other bytes. Read or indexed, the card is the same text."""
    from bench.cli.main import main
    from bench.report.dataset import folder as dataset_folder

    out = tmp_path / "ds"
    assert main(["publish", str(COMPAT[0]), "--to", str(out)]) == 0
    (first,) = [p.parent for p in out.glob("runs/*/results.json")]
    assert (first / "card.json").is_file()
    read_back: list[list[str]] = []
    real = dataset_folder.load_runs

    def spy(paths, *rest):
        read_back.append([Path(p).parent.name for p in paths])
        return real(paths, *rest)

    monkeypatch.setattr(dataset_folder, "load_runs", spy)

    def publish_second() -> str:
        read_back.clear()
        assert main(["publish", str(COMPAT[1]), "--to", str(out)]) == 0
        return _card(out)[1]

    indexed = publish_second()
    assert read_back == []  # the earlier run from its card.json, the new one from memory
    rows = [line for line in indexed.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == sorted(p.parent.name for p in out.glob("runs/*/results.json"))

    # Negative controls: each makes the earlier run read again, and the card is the same as from its record.
    record = (first / "card.json").read_text()
    (first / "card.json").unlink()
    assert publish_second() == indexed and read_back == [[first.name]]
    assert (first / "card.json").read_text() == record  # written again, the same
    with open(first / "results.json", "a") as f:
        f.write("\n")  # other bytes, the same run
    assert publish_second() == indexed and read_back == [[first.name]]
    assert (first / "card.json").read_text() != record  # the new bytes' hash
    assert publish_second() == indexed and read_back == []
    other = json.loads((first / "card.json").read_text())
    other["card"]["run_id"] = "20990101T000000Z-00000000"
    (first / "card.json").write_text(json.dumps(other))
    assert publish_second() == indexed and read_back == [[first.name]]
    (first / "card.json").write_text("{not json")
    assert publish_second() == indexed and read_back == [[first.name]]
    wrong_type = json.loads((first / "card.json").read_text())
    wrong_type["card"]["verdicts"] = 3  # not the text a row holds
    (first / "card.json").write_text(json.dumps(wrong_type))
    assert publish_second() == indexed and read_back == [[first.name]]

    # Published again with nothing else in the folder: nothing is read back at all.
    read_back.clear()
    assert main(["publish", str(COMPAT[0]), str(COMPAT[1]), "--to", str(out)]) == 0
    assert read_back == []


def _with_host(tmp_path: Path, source: Path) -> Path:
    r = load(source)
    folder = tmp_path / "hosted"
    save(folder, dataclasses.replace(r, environment=dataclasses.replace(r.environment, hostname=HOST)))
    return folder


def _cells(folder: Path) -> str:
    """Every value, column name and metadata of every Parquet file, as text (its bytes are compressed)."""
    out = []
    for path in folder.rglob("*.parquet"):
        table = pq.read_table(path)
        out.append(json.dumps(table.to_pylist(), default=str))
        out.append(str(table.schema) + str(pq.read_metadata(path).metadata))
    return "\n".join(out)


def test_no_host_name_in_any_written_file_unless_asked(tmp_path, cli):
    source = _with_host(tmp_path, COMPAT[0])
    assert cli("publish", source, "--to", tmp_path / "ds").returncode == 0
    files = [p for p in (tmp_path / "ds").rglob("*") if p.is_file()]
    assert len(files) >= 5 and not [p for p in files if HOST.encode() in p.read_bytes()]
    assert HOST not in _cells(tmp_path / "ds")
    # negative control: asked for, it is in the results file and in a column
    assert cli("publish", source, "--to", tmp_path / "named", "--with-hostname").returncode == 0
    assert HOST in _cells(tmp_path / "named")
    assert set(pd.read_parquet(tmp_path / "named/data").hostname) == {HOST}


def test_a_bad_input_is_named_and_nothing_is_written(tmp_path, cli):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    res = cli("publish", COMPAT[0], bad, "--to", tmp_path / "ds")
    assert res.returncode == 2 and str(bad) in res.stderr and "nothing was written" in res.stderr
    assert not (tmp_path / "ds").exists()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_refused_publish_leaves_the_folder_as_it_was(tmp_path, cli):
    """A data file deleted by hand was found after the new run's data file, results.json and card.json were
    written: the refused publish left a dataset with a run its card did not list. Control: the same publish
    into the intact folder goes through."""
    out = tmp_path / "ds"
    assert cli("publish", COMPAT[0], "--to", out).returncode == 0
    intact = _snapshot(out)
    (data,) = out.glob("data/*/*.parquet")
    data.unlink()
    before = _snapshot(out)
    res = cli("publish", COMPAT[1], "--to", out)
    assert res.returncode == 2 and "has no data file" in res.stderr and "publish it again" in res.stderr
    assert _snapshot(out) == before
    # Control: with the data file back, the same publish adds the run.
    data.write_bytes(intact[str(data.relative_to(out))])
    assert cli("publish", COMPAT[1], "--to", out).returncode == 0
    assert len(list(out.glob("data/*/*.parquet"))) == 2


@pytest.mark.parametrize("hostname", [False, True], ids=["spooled", "with-hostname"])
def test_a_full_disk_names_the_file_it_could_not_write(tmp_path, hostname):
    """A write() error names no file, nor does pyarrow's: "cannot write: File too large" alone. The limit is
    real (RLIMIT_FSIZE: a write past it fails with EFBIG, treated as a full disk). The first file past it:
    the run's spooled text beside the folder, or with the host name kept (no spool) the data file. Control:
    with room, the same publish writes the whole dataset."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (10 * 1024, 10 * 1024))

    out = tmp_path / "ds"
    args = [str(BASELINE), "--to", str(out), *(["--with-hostname"] if hostname else [])]
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "publish", *args],
        cwd=REPO,
        # Under the limit Python's own bytecode cache files would be cut short in the checkout's
        # __pycache__, and every later import of those modules would fail (a fresh clone has none yet).
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit,
    )
    assert proc.returncode == 74, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("peft-bench: error:")]
    assert line.endswith(": cannot write: File too large"), line
    named = Path(line.removeprefix("peft-bench: error: ").split(": ")[0])
    if hostname:
        assert named.is_relative_to(out) and named.suffix == ".parquet", line
    else:
        assert named.parent.parent == tmp_path and named.parent.name.endswith(".spool"), line
    assert not named.exists() and not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.glob("*.spool"))
    from bench.cli.main import main

    assert main(["publish", *args]) == 0 and (out / "README.md").is_file()


def test_a_folder_that_is_not_a_dataset_is_refused(tmp_path, cli):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds/mine.txt").write_text("x")
    res = cli("publish", COMPAT[0], "--to", tmp_path / "ds")
    assert res.returncode == 2 and "not a dataset written by peft-bench publish" in res.stderr


# --- hf:// -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, repo, revision",
    [
        ("hf://datasets/me/results", "me/results", None),
        ("hf://datasets/org-1/r.s_2@pr-5", "org-1/r.s_2", "pr-5"),
    ],
)
def test_a_hub_target_is_parsed(text, repo, revision):
    target = hub.parse_target(text)
    assert (target.repo_id, target.revision) == (repo, revision) and str(target) == text


@pytest.mark.parametrize(
    "text", ["hf://models/me/x", "hf://datasets/me", "hf://datasets/me/x/y", "hf://datasets/../x", "hf://"]
)
def test_a_bad_hub_target_is_refused(text):
    with pytest.raises(BenchInputError, match="hf://datasets/OWNER/NAME"):
        hub.parse_target(text)


def _publish(args: list[str], env: dict[str, str], tmp_path: Path, code: str | None = None):
    """The real command in its own process, so huggingface_hub reads HF_ENDPOINT and the token afresh."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env = {**base, "HF_HOME": str(tmp_path / "hf-home"), "OMP_NUM_THREADS": "1", **env}
    argv = ["publish", *map(str, args)]
    cmd = (
        [sys.executable, "-c", code + f"\nsys.exit(main({argv!r}))"]
        if code
        else [sys.executable, "-m", "bench", *argv]
    )
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_without_a_token_the_upload_is_refused_before_anything_is_built(tmp_path):
    res = _publish([COMPAT[0], "--to", tmp_path / "ds", "--to", "hf://datasets/me/x"], {}, tmp_path)
    assert (
        res.returncode == 2 and "no Hugging Face token" in res.stderr and "hf://datasets/me/x" in res.stderr
    )
    assert not (tmp_path / "ds").exists()


def test_without_huggingface_hub_the_upload_is_refused_with_the_install_line(tmp_path):
    hide = "import sys\nsys.modules['huggingface_hub'] = None  # as if not installed\nfrom bench.cli.main import main"
    res = _publish([COMPAT[0], "--to", "hf://datasets/me/x"], {"HF_TOKEN": "hf_x"}, tmp_path, code=hide)
    assert res.returncode == 2 and "pip install 'peft-bench[hub]'" in res.stderr
    # control: the same code without hiding the library gets past that check (to the token one)
    shown = "import sys\nfrom bench.cli.main import main"
    res = _publish([COMPAT[0], "--to", "hf://datasets/me/x"], {}, tmp_path, code=shown)
    assert res.returncode == 2 and "no Hugging Face token" in res.stderr


@pytest.fixture
def fake_hub():
    state = Hub()
    server = serve(state)
    yield state
    server.shutdown()
    server.server_close()


HUB_ENV = {"HF_TOKEN": "hf_test_token", "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def test_the_folder_is_uploaded_to_the_hub(tmp_path, fake_hub):
    env = {**HUB_ENV, "HF_ENDPOINT": fake_hub.url}
    out = tmp_path / "ds"
    res = _publish(
        [COMPAT[0], COMPAT[-1], "--to", out, "--to", "hf://datasets/me/peft-results"], env, tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert "uploaded" in res.stdout and "hf://datasets/me/peft-results" in res.stdout
    assert fake_hub.repos == [{"name": "peft-results", "organization": "me", "type": "dataset"}]
    local = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    del local[".peft-bench-dataset"]  # the folder's own marker stays home
    assert fake_hub.files["me/peft-results"] == local
    assert {auth for method, _, auth in fake_hub.requests if method == "POST"} == {"Bearer hf_test_token"}


def test_an_upload_the_hub_refuses_is_a_clear_error(tmp_path, fake_hub):
    fake_hub.fail_commit = True
    env = {**HUB_ENV, "HF_ENDPOINT": fake_hub.url}
    res = _publish([COMPAT[0], "--to", "hf://datasets/me/peft-results"], env, tmp_path)
    assert res.returncode == 2 and "upload failed" in res.stderr and "Traceback" not in res.stderr
    assert fake_hub.files == {}
