"""`peft-bench site`: one static site over many runs, built in a new folder and put in place whole.

The site is built beside --out and swapped in only when complete: a failed build (a bad input, a full disk)
leaves the previous site as it was. A folder that is not a site (no MARKER in it) and not empty is refused,
so a mistyped --out never replaces someone's files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.report.build import write_reports
from bench.report.site import history, pages
from bench.results.atomic import current_umask, write_text
from bench.results.outfiles import check_own_folder
from bench.results.runs import Run, for_publishing, place_results_json

MARKER = ".peft-bench-site"  # what says "this folder is a site this command built"


@dataclass(frozen=True)
class Site:
    out: Path
    pages: tuple[Path, ...]
    runs: tuple[str, ...]  # run ids, in start order


def check_site_folder(out: Path) -> None:
    check_own_folder(out, MARKER, "a site built by peft-bench")


def write_site(
    runs: list[Run], out: Path, *, with_hostname: bool = False, roots: tuple[Path, ...] = ()
) -> Site:
    """The site for `runs` (in start order, bench.results.runs.load_runs) in `out`. The host's name is left
    out of every page and copied results file unless `with_hostname`."""
    out = Path(out)
    check_site_folder(out)
    runs = for_publishing(runs, with_hostname)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".building", dir=out.absolute().parent))
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp's 0700 would keep a web server out of the site
    try:
        written = _build(runs, staging, with_hostname=with_hostname, roots=roots)
        _readable(staging)
        _swap(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Site(out, tuple(out / p.relative_to(staging) for p in written), tuple(r.run_id for r in runs))


def _build(runs: list[Run], root: Path, *, with_hostname: bool, roots: tuple[Path, ...]) -> list[Path]:
    cols = history.columns(runs, with_hostname=with_hostname)
    for col in cols:
        folder = root / pages.RUNS_DIR / col.run.run_id
        place_results_json(folder / "results.json", col.run)
        write_reports(col.run.results, folder, ("html",), roots=roots)
    texts = {
        "index.html": pages.index_page(cols, with_hostname=with_hostname),
        "compat.html": pages.compat_page(cols),
        "trends.html": pages.trends_page(cols),
    }
    for name, text in texts.items():
        write_text(root / name, text)
    write_text(root / MARKER, "built by `peft-bench site`; the command replaces this folder whole\n")
    return [root / name for name in texts]


def _readable(root: Path) -> None:
    """Files as a plain write would leave them (the atomic writes' temporary files are 0600)."""
    mode = 0o666 & ~current_umask()
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def _swap(new: Path, out: Path) -> None:
    old = None
    if out.is_dir():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
    try:
        os.rename(new, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
