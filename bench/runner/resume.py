"""`--resume DIR`: which cases of the run in DIR are still to run, and whether it finished at all.

The selection comes from the results file (the cases are kept in it; older files name their scenario files),
plus any case whose worker finished but whose result never reached results.json (a full disk, a parent killed
between the two). A finished run is told from its columnar copy alone (bench.results.columnar), without
parsing 20,000 cases to find there is nothing to do.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench import RESULTS_SCHEMA_VERSION, __version__
from bench.errors import BenchInputError
from bench.results.environment import library_versions
from bench.results.records import CaseResult, Results
from bench.results.shards import VERDICT_LIBRARIES
from bench.results.store import CASES_DIR, case_from_file, load, open_columnar
from bench.scenario import load_scenarios
from bench.spec.cases import Case, expand_all


def finished_in_case_files(
    out_dir: Path, cases: tuple[Case, ...], previous: dict[str, CaseResult]
) -> dict[str, CaseResult]:
    """`previous`, where a case it has as not_run finished after all: its worker wrote its result into cases/
    but the run could not add it to results.json (a full disk, or the parent killed between the two)."""
    kept = dict(previous)
    for case in cases:
        if kept[case.id].verdict != "not_run":
            continue
        try:
            result = case_from_file(Path(out_dir) / CASES_DIR / f"{case.file_stem}.json")
        except (OSError, ValueError, TypeError, KeyError):  # none, or not a finished result: run it again
            continue
        if result.case_id == case.id and result.verdict != "not_run":
            kept[case.id] = replace(result, case=case.to_dict())
    return kept


@dataclass(frozen=True)
class Resume:
    """What `--resume DIR` runs: the cases of the run in DIR, in its order, with the results it has."""

    cases: tuple[Case, ...]
    previous: dict[str, CaseResult]
    shard: str | None
    scenario_set: tuple[str, ...]
    # case id -> which versions differ, for kept cases measured by another version (--resume-any-version)
    version_notes: dict[str, str] = field(default_factory=dict)

    @property
    def missing(self) -> tuple[Case, ...]:
        return tuple(c for c in self.cases if self.previous[c.id].verdict == "not_run")


def version_differences(results: Results) -> list[str]:
    """How the run in a results file differs from this one in suite and library versions (empty: not at all)."""
    return _differences(results.suite_version, results.environment.libraries)


def _differences(suite_version: str, libraries: dict[str, str | None]) -> list[str]:
    diffs = []
    if suite_version != __version__:
        diffs.append(f"peft-bench {suite_version} there, {__version__} here")
    here = library_versions()
    for lib in VERDICT_LIBRARIES:
        then, now = libraries.get(lib), here.get(lib)
        if then != now:
            diffs.append(f"{lib} {then or 'not installed'} there, {now or 'not installed'} here")
    return diffs


@dataclass(frozen=True)
class Finished:
    """A run with no case left to resume, as its columnar copy tells (no case parsed)."""

    verdicts: tuple[str, ...]
    unverified_passes: int

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(self.verdicts))


def finished_run(out_dir: Path) -> Finished | None:
    """The run in out_dir when every case of it has finished and it was made by these versions, read from its
    columnar copy alone: `--resume` of a finished run of 20,000 cases has nothing to do, and parsing them all to
    find that out took minutes. None when that cannot be told so (no matching copy, a case not run, other
    versions, or a header this version would refuse): resume_selection then reads the whole file."""
    col = open_columnar(out_dir)
    if col is None or col.rows == 0:
        return None
    header = col.header
    if (
        not isinstance(header.get("environment"), dict)
        or header.get("schema_version") != RESULTS_SCHEMA_VERSION
    ):
        return None
    if _differences(str(header.get("suite_version")), header["environment"].get("libraries") or {}):
        return None
    df = col.frame(("verdict", "unverified"))
    if (df["verdict"] == "not_run").any():
        return None
    return Finished(tuple(df["verdict"]), int((df["unverified"] & (df["verdict"] == "pass")).sum()))


def resume_selection(out_dir: Path, *, any_version: bool = False) -> Resume:
    """The selection of the run in out_dir: the cases its results hold (older files: reloaded from the scenario
    files they name).

    A results file that is not one, or is from a newer schema, is a BenchInputError (bench.results.store.load); so is
    a scenario file that changed so that a case of the run no longer exists.
    """
    results = load(out_dir)
    if not results.cases:
        raise BenchInputError("the results file holds no case to resume", source=str(out_dir))
    # Figures measured by another suite or library version are not one run with what runs now.
    diffs = version_differences(results)
    if diffs and not any_version:
        raise BenchInputError(
            f"the run was made by other versions ({'; '.join(diffs)}): start a new run, or keep its cases "
            "anyway with --resume-any-version",
            source=str(out_dir),
        )
    kept_note = "; ".join(diffs)
    if all(c.case for c in results.cases):  # self-contained results: the cases are in the file
        cases = tuple(Case.from_dict(c.case) for c in results.cases)
        return Resume(
            cases=cases,
            previous=finished_in_case_files(out_dir, cases, {c.case_id: c for c in results.cases}),
            shard=results.shard,
            scenario_set=results.scenario_set,
            version_notes={c.case_id: kept_note for c in results.cases if diffs and c.verdict != "not_run"},
        )
    # Results written before cases were kept in them: reload the scenario files they name.
    files = list(dict.fromkeys(c.scenario_file for c in results.cases))
    by_id = {c.id: c for c in expand_all(load_scenarios(files))}
    gone = [c.case_id for c in results.cases if c.case_id not in by_id]
    if gone:
        raise BenchInputError(
            f"{len(gone)} case(s) of this run are no longer in its scenario files ({', '.join(gone[:3])}): "
            "the files changed since the run; start a new run",
            source=str(out_dir),
        )
    return Resume(
        cases=tuple(by_id[c.case_id] for c in results.cases),
        previous={c.case_id: c for c in results.cases},
        shard=results.shard,
        scenario_set=results.scenario_set,
        version_notes={c.case_id: kept_note for c in results.cases if diffs and c.verdict != "not_run"},
    )
