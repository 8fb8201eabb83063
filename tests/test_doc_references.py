"""What the README and docs/ name exists: every repository path in backticks, and every `peft-bench` command's
subcommand and flags. A file moved or a flag renamed leaves no reader looking for it (docs/ci.md named
tests/test_ci_examples.py for a while after the tests moved into tests/cli/). Read as text: a path is a
backticked token that starts with one of the repository's folders; a command is in a backticked span or on a
line of a fenced block.
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


# A command as the docs write it: `peft-bench SUB ...` or `python -m bench SUB ...`, up to a shell operator.
_COMMAND = re.compile(r"(?:peft-bench|python -m bench)\s+([a-z][\w-]*)([^;|&>]*)")
_FLAG = re.compile(r"(?<!\S)(--[a-z][\w-]*)")


def commands(text: str) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, subcommand, flags) of each command in a backticked span, or on a line of a fenced block (its
    shell comment left out: prose)."""
    out = []
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        spans = [line.split(" #")[0]] if fenced and not line.lstrip().startswith("#") else []
        spans += [] if fenced else re.findall(r"`([^`]+)`", line)
        for span in spans:
            for m in _COMMAND.finditer(span):
                out.append((number, m.group(1), tuple(_FLAG.findall(m.group(2)))))
    return out


def unknown_options(parser, text: str) -> list[str]:
    """Each command whose subcommand or flag `parser` (bench.cli.main.build_parser) does not have."""
    (sub,) = [a for a in parser._actions if isinstance(getattr(a, "choices", None), dict)]
    out = []
    for n, name, flags in commands(text):
        if name not in sub.choices:
            out.append(f"line {n}: no subcommand {name!r}")
            continue
        known = sub.choices[name]._option_string_actions
        out += [f"line {n}: {name} has no {flag}" for flag in flags if flag not in known]
    return out


def test_every_command_the_docs_show_parses():
    from bench.cli.main import build_parser

    parser = build_parser()
    texts = {doc.relative_to(REPO).as_posix(): doc.read_text(encoding="utf-8") for doc in DOCS}
    assert sum(len(commands(t)) for t in texts.values()) > 100  # the reader finds the commands
    found = {doc: unknown_options(parser, text) for doc, text in texts.items()}
    assert {doc: lines for doc, lines in found.items() if lines} == {}


def test_a_flag_or_subcommand_that_is_gone_is_caught():
    """Negative control: a flag `run` does not have, a subcommand that does not exist; not a flag of another
    tool after a pipe, nor a command in a fenced block's comment."""
    from bench.cli.main import build_parser

    text = (
        "`peft-bench run --jobs 2 --no-such-flag` and `python -m bench report OUT --table x.csv`\n"
        "`peft-bench frobnicate`\n"
        "```bash\n"
        "peft-bench run scenarios --resume OUT | tee --append log  # peft-bench shards as jobs\n"
        "# peft-bench merge --array 1-3\n"
        "```\n"
    )
    assert unknown_options(build_parser(), text) == [
        "line 1: run has no --no-such-flag",
        "line 2: no subcommand 'frobnicate'",
    ]


def nox_sessions(source: str) -> set[str]:
    """The names of noxfile.py's sessions: each function decorated with `nox.session` (read with ast)."""
    import ast

    return {
        node.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef)
        and any(ast.unparse(d).split("(")[0] == "nox.session" for d in node.decorator_list)
    }


def unknown_sessions(sessions: set[str], text: str) -> list[str]:
    """Each `nox -s NAME` (a parametrized one as NAME(...)) whose NAME is not a session."""
    return [
        f"line {n}: no nox session {name!r}"
        for n, line in enumerate(text.splitlines(), 1)
        for name in re.findall(r"nox -s ([\w-]+)", line)
        if name not in sessions
    ]


def test_every_nox_session_the_docs_name_exists():
    sessions = nox_sessions((REPO / "noxfile.py").read_text(encoding="utf-8"))
    assert {"tests", "bench"} <= sessions  # the README's two commands
    found = {doc.relative_to(REPO).as_posix(): unknown_sessions(sessions, doc.read_text()) for doc in DOCS}
    assert {doc: lines for doc, lines in found.items() if lines} == {}


def test_a_session_that_is_gone_is_caught():
    source = (
        "import nox\n@nox.session\ndef tests(session): ...\n@nox.session(python=False)\ndef bench(s): ...\n"
    )
    assert nox_sessions(source) == {"tests", "bench"}
    text = "`nox -s tests`, `nox -s bench -- --jobs 2`\n`nox -s tset`\n"
    assert unknown_sessions(nox_sessions(source), text) == ["line 2: no nox session 'tset'"]
