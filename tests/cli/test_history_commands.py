"""The commands over many runs are registered like the others and refuse bad options with exit 2."""

from __future__ import annotations

import gc

import pytest

from bench.errors import BenchInputError
from bench.results.store import load
from tests.conftest import REPO

RUN = REPO / "reports/baseline"


def test_the_commands_are_listed():
    from bench.cli.main import build_parser

    text = build_parser().format_help()
    assert all(f"    {name} " in text for name in ("site", "publish", "schema"))
    assert "    sitemap " not in text  # control: the check reads the command list


def test_site_needs_an_out_folder(cli):
    res = cli("site", RUN)
    assert res.returncode == 2 and "--out" in res.stderr


def test_publish_needs_a_target_and_takes_one_of_each(cli, tmp_path):
    assert cli("publish", RUN).returncode == 2
    res = cli("publish", RUN, "--to", tmp_path / "a", "--to", tmp_path / "b")
    assert res.returncode == 2 and "at most one folder" in res.stderr
    res = cli("publish", RUN, "--to", "")
    assert res.returncode == 2 and "empty path" in res.stderr
    res = cli("publish", RUN, "--to", "hf://models/me/x")
    assert res.returncode == 2 and "hf://models/me/x: not a Hub dataset" in res.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_out_file_is_refused_before_anything_is_read(cli, tmp_path):
    (tmp_path / "f").write_text("x")
    res = cli("site", tmp_path / "missing", "--out", tmp_path / "f")
    assert res.returncode == 2 and "is not a folder" in res.stderr and "missing" not in res.stderr


@pytest.mark.parametrize(
    ("command", "module", "builder"),
    [
        ("report", "bench.cli.commands.report", "write_reports"),
        ("site", "bench.cli.commands.site", "write_site"),
        ("publish", "bench.cli.commands.publish", "write_dataset"),
    ],
)
@pytest.mark.parametrize("fails", [False, True], ids=["builds", "build-fails"])
def test_the_loaded_records_are_frozen_while_the_command_builds_and_freed_after(
    command, module, builder, fails, tmp_path, monkeypatch
):
    """report, site and publish keep what they load to their end (bench.results.store.loaded_frozen): while
    they build, the collector is on (their own garbage is collected) but the loaded cases are out of its
    generations, so its passes do not walk millions of records; after, success or not, nothing stays
    frozen (a test process or a long-lived caller would keep them forever)."""
    import importlib

    from bench.cli.main import main

    seen = {}
    real = getattr(importlib.import_module(module), builder)

    def spy(loaded, *args, **kwargs):
        results = loaded if hasattr(loaded, "cases") else loaded[0].results  # report: Results; else runs
        walked = {id(o) for g in range(3) for o in gc.get_objects(generation=g)}
        seen.update(on=gc.isenabled(), frozen=gc.get_freeze_count(), walked=id(results.cases[0]) in walked)
        if fails:
            raise BenchInputError("the build failed")
        return real(loaded, *args, **kwargs)

    monkeypatch.setattr(importlib.import_module(module), builder, spy)
    gc.unfreeze()  # a clean start whatever ran before in this process
    out = ["--out", str(tmp_path / "out")] if command != "publish" else ["--to", str(tmp_path / "out")]
    assert main([command, str(RUN), *out]) == (2 if fails else 0)
    assert seen["on"] and seen["frozen"] > len(load(RUN).cases) and not seen["walked"]
    assert gc.get_freeze_count() == 0
