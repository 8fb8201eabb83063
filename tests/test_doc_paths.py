"""Every repository path the README and docs/ name in backticks exists: a file moved or renamed leaves no
reader looking for it (docs/ci.md named tests/test_ci_examples.py for a while after the tests moved into
tests/cli/). Read as text: a path is a backticked token that starts with one of the repository's folders.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
FOLDERS = (
    "bench/",
    "benchmarks/",
    "tests/",
    "scenarios/",
    "examples/",
    "reports/",
    "docs/",
    "constraints/",
    ".ci/",
)
# Folders a run writes, named as where its output goes, not as files the repository holds.
WRITTEN = ("reports/run-*",)
_TOKEN = re.compile(r"`([^`\s]+)`")


def named_paths(text: str) -> list[tuple[int, str]]:
    """(line, path) for each backticked repository path: a test id's `::name` and trailing punctuation
    dropped; placeholders (`<combo>`) and the folders a run writes left out."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in _TOKEN.finditer(line):
            path = match.group(1).split("::")[0].rstrip(".,:;)")
            if path.startswith(FOLDERS) and "<" not in path and path not in WRITTEN:
                out.append((number, path))
    return out


def missing(root: Path, text: str) -> list[str]:
    """The named paths with nothing under `root`: a glob (`*`) must match at least one file."""
    return [
        f"line {n}: {p}"
        for n, p in named_paths(text)
        if not (any(root.glob(p)) if "*" in p else (root / p).exists())
    ]


def test_every_path_the_docs_name_exists():
    found = {doc.relative_to(REPO).as_posix(): missing(REPO, doc.read_text(encoding="utf-8")) for doc in DOCS}
    assert sum(len(named_paths(doc.read_text(encoding="utf-8"))) for doc in DOCS) > 100  # the reader reads
    assert {doc: lines for doc, lines in found.items() if lines} == {}


def test_a_moved_file_is_caught_and_placeholders_are_not(tmp_path):
    """Negative control: the check fails on a path that is not there, a glob matching nothing and a test id
    in a folder it left; it passes placeholders, written folders and globs that match."""
    (tmp_path / "tests" / "cli").mkdir(parents=True)
    (tmp_path / "tests" / "cli" / "test_ci_examples.py").write_text("")
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "moe_a.toml").write_text("")
    text = (
        "see `tests/test_ci_examples.py::test_one`, `tests/cli/test_ci_examples.py::test_one`.\n"
        "`scenarios/moe_*.toml` and `scenarios/lora_*.toml`; `reports/run-*`, `reports/compat/<combo>/`\n"
        "`bench/gone.py`, `--out reports/x` is prose with a space, `pip` is not a path."
    )
    assert missing(tmp_path, text) == [
        "line 1: tests/test_ci_examples.py",
        "line 2: scenarios/lora_*.toml",
        "line 3: bench/gone.py",
    ]
