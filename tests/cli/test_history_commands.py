"""The commands over many runs are registered like the others and refuse bad options with exit 2."""

from __future__ import annotations

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
