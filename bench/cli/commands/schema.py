"""`peft-bench schema [--out FILE]`: the JSON Schema of results.json, for consumers outside Python."""

from __future__ import annotations

import argparse

from bench.cli.paths import check_out_file, path_arg
from bench.results.atomic import write_text
from bench.results.json_schema import schema_text

NAME = "schema"
SHIPPED = (
    "docs/results.schema.json"  # the copy in the repository, kept equal by tests/results/test_json_schema.py
)


def register(sub) -> None:
    p = sub.add_parser(
        NAME,
        help="print (or write) the JSON Schema of results.json",
        description="The JSON Schema (draft 2020-12) of results.json, generated from the records the reader "
        f"checks; {SHIPPED} is a copy of it.",
    )
    p.add_argument("--out", type=path_arg, help="write it to this file instead of printing it")


def run(args: argparse.Namespace) -> int:
    if args.out is None:
        print(schema_text(), end="")
        return 0
    check_out_file(args.out)
    write_text(args.out, schema_text())
    print(f"peft-bench: results schema in {args.out}")
    return 0
