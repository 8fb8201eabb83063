"""A worker entry for tests/report/test_report.py: runs a reproduction script the way `python SCRIPT` does, in a
process forked from the preloaded worker (bench.runner.zygote), so that torch, transformers and peft are imported
once per test process instead of once per script. peft-bench itself is made unimportable first, as in the
fresh-interpreter runs: every bench module the preloaded worker holds is blocked (None in sys.modules makes
any later `import bench...` or `from bench... import` raise), so a script that leaned on the suite would
fail here as it would for a user without it."""

from __future__ import annotations

import os
import runpy
import sys


def main(argv: list[str]) -> int:
    script, cwd = argv
    for name in list(sys.modules):
        if name == "bench" or name.startswith("bench."):
            sys.modules[name] = None
    os.chdir(cwd)
    sys.argv = [script]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # what `python SCRIPT` puts first
    runpy.run_path(script, run_name="__main__")
    return 0
