"""The compat table (`nox -s compat` -> reports/compat/compat.md): a row per combination, broken guarantees
shown as broken, a combination that could not install or import as a row that says so."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from bench.cli.compat_table import compat_markdown, load_combinations
from bench.errors import BenchInputError
from bench.results.records import CaseResult, Results
from bench.results.store import save
from tests.conftest import REPO, fixed_environment

ENV = fixed_environment(hostname="h")


def _results(verdicts: dict[str, tuple[str, str]], transformers: str) -> Results:
    cases = tuple(
        CaseResult(
            case_id=cid,
            scenario=cid.split("[")[0],
            scenario_file="scenarios/x.toml",
            params={},
            verdict=v,
            reason=r,
        )
        for cid, (v, r) in verdicts.items()
    )
    env = dataclasses.replace(ENV, libraries={**ENV.libraries, "transformers": transformers})
    return Results(1, "0.1.0", "2026-01-01T00:00:00+00:00", env, ("x",), cases)


def _combo(root, transformers, peft, stage, detail="", verdicts=None):
    folder = root / f"transformers-{transformers}_peft-{peft}"
    folder.mkdir(parents=True)
    status = {"transformers": transformers, "peft": peft, "stage": stage, "detail": detail}
    (folder / "status.json").write_text(json.dumps(status))
    if verdicts is not None:
        save(folder, _results(verdicts, transformers))
    return folder


SWAP = "hotswap-alpha[fp32-aot_eager-peft]"
ALPHA = "hotswap-alpha[fp32-aot_eager-transformers]"


@pytest.fixture
def compat_root(tmp_path):
    root = tmp_path / "compat"
    _combo(root, "5.23.0", "0.21.2", "ran", verdicts={SWAP: ("pass", ""), ALPHA: ("xfail", "stale scaling")})
    _combo(
        root,
        "5.24.0",
        "0.21.2",
        "ran",
        verdicts={
            SWAP: ("error", "step 2 (load_adapter): ValueError: use a version >= 0.22.0"),
            ALPHA: ("error", "step 2 (load_adapter): ValueError: use a version >= 0.22.0"),
        },
    )
    _combo(root, "5.23.0", "9.9.9", "install failed", "ERROR: No matching distribution found for peft==9.9.9")
    _combo(root, "5.23.0", "0.1.0", "import failed", "ImportError: cannot import name 'X' | from peft")
    return root


def _row(text: str, transformers: str, peft: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {transformers} | {peft} |"))


def test_rows_show_what_holds_and_what_is_broken(compat_root):
    text = compat_markdown(load_combinations(compat_root))
    assert f"| `{SWAP}` | `{ALPHA}` |" in text.splitlines()[4]
    assert _row(text, "5.23.0", "0.21.2").endswith("| 1/2 | holds | BROKEN (known) |")
    # transformers 5.24 refuses peft 0.21: every guarantee is broken and the table says so, with the reason.
    assert _row(text, "5.24.0", "0.21.2").endswith("| 0/2 | BROKEN (error) | BROKEN (error) |")
    assert "transformers 5.24.0, peft 0.21.2, `hotswap-alpha[fp32-aot_eager-peft]`: BROKEN (error)" in text
    assert ">= 0.22.0" in text


def test_combinations_that_did_not_install_or_import_are_rows(compat_root):
    text = compat_markdown(load_combinations(compat_root))
    install = _row(text, "5.23.0", "9.9.9")
    assert "install failed: ERROR: No matching distribution found for peft==9.9.9" in install
    assert install.endswith("| - | - | - |")
    imp = _row(text, "5.23.0", "0.1.0")
    assert "import failed: ImportError" in imp and "\\|" in imp  # a | in the detail does not split the row


def test_rows_are_in_release_order(tmp_path):
    for transformers in ("5.23.0", "5.9.0", "5.24.0"):
        _combo(tmp_path, transformers, "0.21.2", "install failed")
    assert [c.transformers for c in load_combinations(tmp_path)] == ["5.9.0", "5.23.0", "5.24.0"]


def test_a_table_where_everything_holds_says_so(tmp_path):
    """Control for the reasons list: it is empty only when nothing is broken."""
    _combo(tmp_path, "5.23.0", "0.21.2", "ran", verdicts={SWAP: ("pass", ""), ALPHA: ("xpass", "fixed")})
    text = compat_markdown(load_combinations(tmp_path))
    assert _row(text, "5.23.0", "0.21.2").endswith("| 2/2 | holds | holds (known failure fixed: xpass) |")
    assert "Every guarantee holds in every combination that ran (1 of 1)" in text


def test_a_table_where_nothing_ran_does_not_claim_anything_holds(tmp_path):
    _combo(tmp_path, "5.23.0", "9.9.9", "install failed", "ERROR: no such version")
    text = compat_markdown(load_combinations(tmp_path))
    assert "Every guarantee holds" not in text and "No combination ran (of 1)" in text
    assert text.splitlines()[4] == "| transformers | peft | status | hold |"


def test_bad_status_files_are_input_errors(tmp_path):
    with pytest.raises(BenchInputError, match="no combination folder"):
        load_combinations(tmp_path)
    folder = _combo(tmp_path, "5.23.0", "0.21.2", "exploded")
    with pytest.raises(BenchInputError, match="unknown stage 'exploded'") as info:
        load_combinations(tmp_path)
    assert str(folder / "status.json") in str(info.value)


def test_renders_without_the_libraries_installed(compat_root):
    """The Nox session renders the table in a virtualenv whose install may have failed: the module must run
    with the repo on sys.path and no torch, transformers or peft importable."""
    code = (
        "import sys, runpy; sys.modules.update({m: None for m in ('torch', 'transformers', 'peft', 'pandas')}); "
        f"sys.argv = ['compat', {str(compat_root)!r}]; runpy.run_module('bench.cli.commands.compat', run_name='__main__')"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (compat_root / "compat.md").read_text().startswith("# Hotswap guarantees across library versions")
    assert "4 combination(s)" in proc.stdout
