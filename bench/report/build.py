"""Write a results file's reports next to it: report.md, report.html and repro/ (one script per failure)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.report import drawing, html, markdown, plots
from bench.report.repro import Repro, write_repros
from bench.results.atomic import write_text
from bench.results.records import Results

REPORT_FILES = {"md": "report.md", "html": "report.html"}


@dataclass(frozen=True)
class Written:
    paths: tuple[Path, ...]
    repros: dict[str, Repro]


def write_reports(
    results: Results,
    out_dir: Path,
    formats: tuple[str, ...] = ("md", "html"),
    *,
    roots: tuple[Path, ...] = (),
    results_dir: Path | None = None,
    draw_helper: bool = True,
) -> Written:
    """`roots` are folders to look for the scenario files in (besides the current folder), for the scripts;
    `results_dir` is the folder holding results.json and cases/ (default `out_dir`), for the failures' logs.
    The HTML's figures are drawn partly in a helper process while the text is written (bench.report.drawing;
    `draw_helper=False`: all in this process)."""
    out_dir = Path(out_dir)
    results_dir = Path(results_dir) if results_dir is not None else out_dir
    figures_wanted = "html" in formats and plots.unavailable_reason() is None
    with drawing.Painter(helper=draw_helper and figures_wanted) as painter:
        if figures_wanted:
            painter.share(drawing.planned(results))
        repros = write_repros(results, out_dir, roots=roots)
        paths = [out_dir / r.path for r in repros.values() if r.path]
        for fmt in formats:
            path = out_dir / REPORT_FILES[fmt]
            if fmt == "md":
                text = markdown.render(results, repros, results_dir=results_dir, out_dir=out_dir)
            else:
                figures = painter.plots() if figures_wanted else None
                text = html.render(results, repros, out_dir=out_dir, results_dir=results_dir, figures=figures)
            write_text(path, text)
            paths.append(path)
    return Written(tuple(paths), repros)
