"""`peft-bench compat [DIR] [--out FILE]`: render the compat table from `nox -s compat`'s folders.

Also runnable as `python -m bench.cli.commands.compat`, which imports nothing beyond the stdlib: the Nox session
renders the table with it even when a combination's install failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.cli.compat_table import COMPAT_FILE, compat_markdown, load_combinations
from bench.errors import BenchInputError
from bench.results.atomic import write_text

NAME = "compat"
DEFAULT_DIR = Path("reports/compat")


def register(sub) -> None:
    p = sub.add_parser(NAME, help="render the hotswap compat table from `nox -s compat` results")
    _arguments(p)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", type=Path, default=DEFAULT_DIR, help="folder of combinations")
    p.add_argument("--out", type=Path, help="markdown file to write (default DIR/compat.md)")


def run(args: argparse.Namespace) -> int:
    combos = load_combinations(args.dir)
    out = args.out or args.dir / COMPAT_FILE
    text = compat_markdown(combos)
    write_text(out, text)
    print(text, end="")
    print(f"peft-bench: compat table for {len(combos)} combination(s) in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cli.commands.compat")
    _arguments(p)
    try:
        return run(p.parse_args(argv))
    except BenchInputError as exc:
        print(f"peft-bench compat: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
