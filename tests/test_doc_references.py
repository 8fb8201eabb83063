"""What the README and docs/ name exists: every repository path in backticks, every `peft-bench` command's
subcommand and flags, every `nox -s` session and every flag of a `python benchmarks/...` script. A file moved or
a flag renamed leaves no reader looking for it (docs/ci.md named tests/test_ci_examples.py for a while after
the tests moved into tests/cli/). Read as text: code is a backticked span (one may wrap over lines of a
paragraph) or a line of a fenced block, less its shell comment.
"""

from __future__ import annotations

import ast
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
# A command as the docs write it: `peft-bench SUB ...` or `python -m bench SUB ...`, up to a shell operator.
_COMMAND = re.compile(r"(?:peft-bench|python -m bench)\s+([a-z][\w-]*)([^;|&>]*)")
_SCRIPT = re.compile(r"python (benchmarks/\w+\.py)([^;|&>]*)")
_FLAG = re.compile(r"(?<!\S)(--[a-z][\w-]*)")


def code_spans(text: str) -> list[tuple[int, str]]:
    """(line, code) of each backticked span (its line breaks as spaces, numbered by the line it starts on)
    and each line of a fenced block (up to its shell comment; a comment line is prose)."""
    fenced, prose, out = False, [], []
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            prose.append("")
        elif fenced:
            prose.append("")
            if not line.lstrip().startswith("#"):
                out.append((number, line.split(" #")[0].rstrip()))
        else:
            prose.append(line)
    joined = "\n".join(prose)
    for m in re.finditer(r"`([^`]+)`", joined):
        out.append((joined.count("\n", 0, m.start()) + 1, m.group(1).replace("\n", " ")))
    return sorted(out)


def named_paths(text: str) -> list[tuple[int, str]]:
    """(line, path) for each backticked repository path (a span that is one token): a test id's `::name`
    and trailing punctuation dropped; placeholders (`<combo>`) and the folders a run writes left out."""
    out = []
    for number, code in code_spans(text):
        if code != code.strip() or " " in code:
            continue
        path = code.split("::")[0].rstrip(".,:;)")
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


def commands(text: str) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, subcommand, flags) of each peft-bench command in the code of `text`."""
    return [
        (n, m.group(1), tuple(_FLAG.findall(m.group(2))))
        for n, code in code_spans(text)
        for m in _COMMAND.finditer(code)
    ]


def unknown_options(parser, text: str) -> list[str]:
    """Each command whose subcommand or flag `parser` (bench.cli.main.build_parser) does not have; flags
    exactly as written (`run` takes no abbreviations)."""
    (sub,) = [a for a in parser._actions if isinstance(getattr(a, "choices", None), dict)]
    out = []
    for n, name, flags in commands(text):
        if name not in sub.choices:
            out.append(f"line {n}: no subcommand {name!r}")
            continue
        known = sub.choices[name]._option_string_actions
        out += [f"line {n}: {name} has no {flag}" for flag in flags if flag not in known]
    return out


def nox_sessions(source: str) -> set[str]:
    """The names of noxfile.py's sessions: each function decorated with `nox.session` (read with ast)."""
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


def script_flags(source: str) -> set[str]:
    """The option strings a script's argparse takes: every "--name" argument of an `add_argument` call."""
    return {
        arg.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"
        for arg in node.args
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("--")
    }


def unknown_script_flags(root: Path, text: str) -> list[str]:
    """Each `python benchmarks/NAME.py ... --flag` whose script is missing or takes no such flag."""
    out = []
    for n, code in code_spans(text):
        for script, rest in _SCRIPT.findall(code):
            if not (root / script).is_file():
                out.append(f"line {n}: no {script}")
                continue
            known = script_flags((root / script).read_text(encoding="utf-8"))
            out += [f"line {n}: {script} has no {f}" for f in _FLAG.findall(rest) if f not in known]
    return out


def _texts() -> dict[str, str]:
    return {doc.relative_to(REPO).as_posix(): doc.read_text(encoding="utf-8") for doc in DOCS}


def _problems(check) -> dict[str, list[str]]:
    return {doc: lines for doc, text in _texts().items() if (lines := check(text))}


def test_every_path_the_docs_name_exists():
    assert sum(len(named_paths(t)) for t in _texts().values()) > 100  # the reader finds the paths
    assert _problems(lambda text: missing(REPO, text)) == {}


def test_every_command_the_docs_show_parses():
    from bench.cli.main import build_parser

    parser = build_parser()
    assert sum(len(commands(t)) for t in _texts().values()) > 100  # the reader finds the commands
    assert _problems(lambda text: unknown_options(parser, text)) == {}


def test_every_nox_session_the_docs_name_exists():
    sessions = nox_sessions((REPO / "noxfile.py").read_text(encoding="utf-8"))
    assert {"tests", "bench"} <= sessions  # the README's two commands
    assert _problems(lambda text: unknown_sessions(sessions, text)) == {}


def test_every_benchmark_flag_the_docs_show_exists():
    assert sum(len(_SCRIPT.findall(code)) for t in _texts().values() for _, code in code_spans(t)) > 10
    assert _problems(lambda text: unknown_script_flags(REPO, text)) == {}


def test_code_spans_wrap_over_lines_and_leave_fences_and_comments_out():
    text = "a `peft-bench run\n--jobs 2` b\n```bash\npeft-bench report OUT  # `x`\n# prose\n```\n`y`\n"
    assert code_spans(text) == [(1, "peft-bench run --jobs 2"), (4, "peft-bench report OUT"), (7, "y")]


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


def test_a_flag_or_subcommand_that_is_gone_is_caught():
    """Negative control: a flag `run` does not have (also where the span wraps), a subcommand that does not
    exist; not a flag of another tool after a pipe, nor a command in a fenced block's comment."""
    from bench.cli.main import build_parser

    text = (
        "`peft-bench run --jobs 2 --no-such-flag` and `python -m bench report OUT --table x.csv`\n"
        "`peft-bench frobnicate`, `peft-bench run scenarios\n--resum OUT`\n"
        "```bash\n"
        "peft-bench run scenarios --resume OUT | tee --append log  # peft-bench shards as jobs\n"
        "# peft-bench merge --array 1-3\n"
        "```\n"
    )
    assert unknown_options(build_parser(), text) == [
        "line 1: run has no --no-such-flag",
        "line 2: no subcommand 'frobnicate'",
        "line 2: run has no --resum",
    ]


def test_a_session_that_is_gone_is_caught():
    source = (
        "import nox\n@nox.session\ndef tests(session): ...\n@nox.session(python=False)\ndef bench(s): ...\n"
    )
    assert nox_sessions(source) == {"tests", "bench"}
    text = "`nox -s tests`, `nox -s bench -- --jobs 2`\n`nox -s tset`\n"
    assert unknown_sessions(nox_sessions(source), text) == ["line 2: no nox session 'tset'"]


def test_a_benchmark_flag_that_is_gone_is_caught(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "b.py").write_text(
        "import argparse\nap = argparse.ArgumentParser()\nap.add_argument('--rounds', type=int)\n"
        "ap.add_argument('-k', '--keyword')\n"
    )
    text = "`python benchmarks/b.py --rounds 3 -k x --keyword y`, `python benchmarks/b.py\n--round 3`\n"
    text += "```bash\nOMP_NUM_THREADS=1 python benchmarks/gone.py --x\n```\n"
    assert unknown_script_flags(tmp_path, text) == [
        "line 1: benchmarks/b.py has no --round",
        "line 4: no benchmarks/gone.py",
    ]
