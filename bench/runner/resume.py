"""`--resume DIR`: which cases of the run in DIR are still to run, and whether it finished at all.

The selection comes from the results file (the cases are kept in it; older files name their scenario files),
plus any case whose worker finished but whose result never reached results.json (a full disk, a parent killed
between the two). A finished run is told from its columnar copy alone (bench.results.columnar), without
parsing 20,000 cases to find there is nothing to do.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from bench import RESULTS_SCHEMA_VERSION, __version__
from bench.errors import BenchInputError
from bench.results.environment import cpu_name, library_versions
from bench.results.records import CaseResult, Results, RunSettings
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
    # What the run recorded of itself, that finishing it must keep: its whole selection, its options, its
    # --jobs and when it started (Results.selection_*, options, jobs, created_at).
    selection: tuple[int, str] | None = None
    options: RunSettings | None = None
    jobs: int = 1
    created_at: str = ""

    @property
    def missing(self) -> tuple[Case, ...]:
        return tuple(c for c in self.cases if self.previous[c.id].verdict == "not_run")


def version_differences(results: Results) -> list[str]:
    """How the run in a results file differs from this one in suite and library versions, and in the kind of
    machine (its CPU and core count: the kept cases' figures were measured there, and the file has one
    environment block); empty: not at all. The host's name is not compared: a requeued job may land on
    another node of the same kind."""
    env = results.environment
    machine = []
    here_cpu, here_cores = cpu_name(), os.cpu_count() or 0
    if env.cpu and env.cpu != here_cpu:
        machine.append(f"CPU {env.cpu} there, {here_cpu} here")
    if env.cpu_count and env.cpu_count != here_cores:
        machine.append(f"{env.cpu_count} cores there, {here_cores} here")
    return _differences(results.suite_version, env.libraries) + machine


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
            f"the run was made by other versions or on another kind of machine ({'; '.join(diffs)}): start a "
            "new run, or keep its cases anyway with --resume-any-version",
            source=str(out_dir),
        )
    kept_note = "; ".join(diffs)
    own = {
        "selection": (results.selection_cases, results.selection_sha256)
        if results.selection_sha256
        else None,
        "options": results.options,
        "jobs": results.jobs,
        "created_at": results.created_at,
    }
    if all(c.case for c in results.cases):  # self-contained results: the cases are in the file
        cases = tuple(Case.from_dict(c.case) for c in results.cases)
        return Resume(
            cases=cases,
            previous=finished_in_case_files(out_dir, cases, {c.case_id: c for c in results.cases}),
            shard=results.shard,
            scenario_set=results.scenario_set,
            version_notes={c.case_id: kept_note for c in results.cases if diffs and c.verdict != "not_run"},
            **own,
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
        **own,
    )


# --flag -> the RunSettings field it sets (and --jobs): what a resume must keep.
RESUMED_OPTIONS = {
    "--require-oracles": "require_oracles",
    "--timeout": "timeout_s",
    "--memory-limit-mb": "memory_limit_bytes",
    "--device": "device",
    "--compile-cache": "compile_cache",
    "--worker": "worker",
    "--trust-remote-code": "trust_remote_code",
    "--allow-pickle": "allow_pickle",
    "--jobs": "jobs",
}


def given_options(argv: list[str]) -> set[str]:
    """The RESUMED_OPTIONS fields the command line gives (argparse takes an unambiguous prefix of a flag too)."""
    out = set()
    for token in argv:
        name = token.split("=", 1)[0]
        if len(name) > 2 and name.startswith("--"):
            out |= {field for flag, field in RESUMED_OPTIONS.items() if flag.startswith(name)}
    return out


def resumed_options(
    recorded: RunSettings | None, recorded_jobs: int, asked: RunSettings, asked_jobs: int, given: set[str]
) -> tuple[RunSettings, int, list[str]]:
    """The options a --resume runs its cases with: the run's own, so that every case of it is judged and
    timed under one set (a resume without --require-oracles passed steps the run's first cases had failed).
    An option the resume's command line gives with another value is refused; one it leaves out is taken
    from the run, and said. Files from before the run recorded its options: the resume's own."""
    if recorded is None:
        return asked, asked_jobs, []
    values = {**{f.name: getattr(recorded, f.name) for f in fields(recorded)}, "jobs": recorded_jobs}
    wanted = {**{f.name: getattr(asked, f.name) for f in fields(asked)}, "jobs": asked_jobs}
    flag = {v: k for k, v in RESUMED_OPTIONS.items()}
    notes = []
    for name, value in values.items():
        if name not in flag or wanted[name] == value:
            continue
        if name in given:
            raise BenchInputError(
                f"--resume: the run was started with {_shown(flag[name], value)}, this command gives "
                f"{_shown(flag[name], wanted[name])}: a run's cases are judged and timed under one set of "
                "options; resume without it, or start a new run"
            )
        notes.append(_shown(flag[name], value))
    return recorded, recorded_jobs, notes


def _shown(flag: str, value) -> str:
    """An option as its command line gives it: `--memory-limit-mb 1024`, `--device` not given."""
    if value is None or value is False:
        return f"{flag} not given"
    if value is True:
        return flag
    if flag == "--memory-limit-mb":
        return f"{flag} {value // 2**20}"
    return f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}"
