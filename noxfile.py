"""Nox sessions: the ways users and CI run peft-bench.

Every session installs what it needs from the repo's own files. On CPU machines torch is pinned to the CPU
wheel through constraints/ci.txt (an unpinned torch pulls a multi-GB CUDA build); users installing
peft-bench themselves keep their own torch.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

CONSTRAINTS = ("-c", "constraints/ci.txt")


def install(session: nox.Session, *extras: str) -> None:
    target = f".[{','.join(extras)}]" if extras else "."
    # No .pyc files at install time: pip writes them one file at a time, for every module of every package
    # (torch and transformers alone are thousands, most never imported here). Instead the session's own
    # processes write each one on first import. These machines set PYTHONDONTWRITEBYTECODE, which would
    # make every process compile every import again (torch, transformers and peft: 6 s -> 13 s); an empty
    # value turns it off.
    session.install("--no-compile", *CONSTRAINTS, "-e", target)
    session.env["PYTHONDONTWRITEBYTECODE"] = ""
    session.run("python", "-m", "pip", "list", "--format=freeze", silent=False)


def _apt_install(session: nox.Session, packages, why: str) -> None:
    """Debian packages a session needs (Chromium, Slurm), from the archive with apt-get: only as root."""
    if os.geteuid() != 0:
        session.error(f"{why}: run as root (apt-get) or install {' '.join(packages)}")
    apt_env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.run("apt-get", "update", "-q", external=True, env=apt_env)
    session.run(
        "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages, external=True, env=apt_env
    )


def _pytest(session: nox.Session, marks: str) -> None:
    """pytest over the tests selected by `marks`: one pytest-xdist process per core (work stealing: a few tests
    take a minute, most well under a second), each test's torch on one intra-op thread: two processes each
    spinning two threads on a 2-core machine run several times slower than two single-threaded ones. posargs
    go to pytest (`-n 0` runs serially)."""
    install(session, "test")
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "-n",
        "auto",
        "--dist",
        "worksteal",
        "-m",
        marks,
        *session.posargs,
        env=env,
    )


@nox.session
def tests(session: nox.Session) -> None:
    """The project's fast tests (what the README calls): every test but those marked `slow` or `browser`.

    `slow` marks the tests that take seconds each (real worker processes, compiles, signals, installs of other
    library releases: 358 of 1,509 tests, four fifths of the suite's time in CI; the README says where that was
    measured); `nox -s slow` runs them, and .ci/run runs both. The browser tests need Chromium, which `nox -s browser` installs. Deselected here, not skipped."""
    _pytest(session, "not slow and not browser")


@nox.session
def slow(session: nox.Session) -> None:
    """The tests marked `slow` (see `tests`): the real run paths, the catalogue's planted bugs, signals, bisect."""
    _pytest(session, "slow and not browser")


BROWSER_PACKAGES = ("chromium",)
BROWSER_BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@nox.session
def browser(session: nox.Session) -> None:
    """The HTML report as a reader sees it (tests/browser): rendered in headless Chromium at 1400 px.

    Installs Debian's chromium with apt-get when no Chromium is on PATH (as root, as the slurm session does),
    then runs the tests marked `browser`. posargs go to pytest."""
    import shutil

    if not any(shutil.which(b) for b in BROWSER_BINARIES):
        _apt_install(session, BROWSER_PACKAGES, "no Chromium on PATH")
    install(session, "test")
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "browser",
        "tests/browser",
        *session.posargs,
        env=env,
    )


# What the slurm session needs from Debian: the daemons, the client commands and munge's key tool.
SLURM_PACKAGES = ("slurm-wlm", "munge")
SLURM_BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "squeue")


@nox.session
def slurm(session: nox.Session) -> None:
    """The shipped Slurm example under a real scheduler (tests/slurm/test_slurm_array.py).

    Installs Debian's slurm-wlm and munge with apt-get when their commands are missing (as root), then runs the
    test module with PEFT_BENCH_SLURM=1: it starts munged, slurmctld and slurmd on localhost from a generated
    configuration, submits examples/slurm/run_array.sbatch as a job array and merge.sbatch after it, checks
    what came back (and a planted crash), and stops the daemons. posargs go to pytest."""
    import shutil

    missing = [b for b in SLURM_BINARIES if shutil.which(b) is None]
    if missing:
        _apt_install(session, SLURM_PACKAGES, f"missing {', '.join(missing)}")
    install(session, "test")
    env = {"PEFT_BENCH_SLURM": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    session.run(
        "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/slurm", *session.posargs, env=env
    )


BENCH_SKIP_TAGS = ("slow",)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the default scenarios and write results and reports under reports/. Posargs go to `peft-bench run`.

    One job per core (`--jobs auto`): each case pinned to its own core with one torch thread, so the run
    takes 1/cores of the time. The forward medians this changes are measured (benchmarks/fidelity.py);
    `nox -s bench -- scenarios` runs the cases one after another. The default leaves out the scenarios
    tagged "slow" (BENCH_SKIP_TAGS) to stay within its 4-minute budget on a 2-core machine;
    `nox -s bench -- scenarios --jobs auto` runs every shipped scenario."""
    install(session, "quant", "report")
    args = session.posargs or ["scenarios", "--jobs", "auto", *(f"--skip-tag={t}" for t in BENCH_SKIP_TAGS)]
    out = _out_arg(args)
    if out is None:  # the report needs to know the folder: name it the way `peft-bench run` would
        import time

        out = f"reports/run-{time.strftime('%Y%m%d-%H%M%S')}"
        args = [*args, "--out", out]
    from nox.command import CommandFailed

    try:
        session.run("peft-bench", "run", *args)
    finally:  # a failing case is what the report is for: render it either way, then let the failure stand
        try:
            session.run("peft-bench", "report", out)
        except CommandFailed:
            session.log(f"no report for {out}")


def _out_arg(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--out" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--out="):
            return arg.split("=", 1)[1]
    return None


# The gating scenarios: those tagged "gate". The gate runs them single-threaded (OMP_NUM_THREADS=1): on a
# shared or small CPU machine torch's intra-op threads spin-wait for a busy core, which turned 1.4 ms calls
# into 380 ms ones in our runs; one thread keeps run-to-run noise within what the thresholds allow.
GATE_TAG = "gate"
GATE_RUN = "reports/tmp/gate"
GATE_BASELINE = "reports/baseline/results.json"
GATE_ENV = {"OMP_NUM_THREADS": "1"}


@nox.session
def gate(session: nox.Session) -> None:
    """Run the gating scenarios, then `peft-bench gate` against the committed CPU baseline.

    Posargs go to `peft-bench gate` (e.g. --allow-missing, --latency-rel 0.5). `nox -s gate -- --update-baseline`
    regenerates reports/baseline/results.json from a fresh run."""
    import shutil
    from pathlib import Path

    from nox.command import CommandFailed

    install(session, "report")
    shutil.rmtree(GATE_RUN, ignore_errors=True)
    try:  # exit 1 (a case failed) is for the gate to judge against the baseline, not a session error
        session.run(
            "peft-bench",
            "run",
            "scenarios",
            "--tag",
            GATE_TAG,
            "--out",
            GATE_RUN,
            env=GATE_ENV,
            success_codes=[0, 1],
        )
    except CommandFailed:
        session.error("the gating scenarios could not run")
    session.run("peft-bench", "report", GATE_RUN)
    session.run("peft-bench", "gate", GATE_RUN, "--baseline", GATE_BASELINE, *session.posargs)
    if "--update-baseline" in session.posargs:  # the committed baseline carries its report and repro scripts
        session.run("peft-bench", "report", str(Path(GATE_BASELINE).parent), "--format", "md")


@nox.session
def report(session: nox.Session) -> None:
    """Render report.md, report.html and reproduction scripts from existing results (posargs: results paths)."""
    install(session, "report")
    if not session.posargs:
        session.error("give the results to render: nox -s report -- reports/run-XXXX [more ...]")
    for path in session.posargs:
        session.run("peft-bench", "report", path)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*CONSTRAINTS, "ruff")
    session.run("ruff", "check", "bench", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "bench", "tests", "benchmarks", "noxfile.py")


# ---------------------------------------------------------------------------------------------------------
# compat: the hotswap gating scenarios across transformers x peft releases.
# How a maintainer learns that a new release broke hotswapping before users do. Each combination gets its own
# virtualenv, constraints file (torch stays pinned, the pair varies) and results folder; one table shows
# which guarantees hold per combination. A combination that cannot install, import or run is a row saying so.

COMPAT_DIR = "reports/compat"
COMPAT_TAGS = ("hotswap", "gate")  # scenarios carrying all of these tags are the hotswap gating scenarios
COMPAT_MATRIX = [
    ("5.23.0", "0.21.2"),  # the pinned pair (constraints/ci.txt)
    ("5.24.0", "0.21.2"),  # transformers 5.24 requires peft >= 0.22 in most adapter calls; no such release
    ("5.25.0", "0.21.2"),  # the newest transformers on 2026-12-06 (a plain install's pair): 5.24's check
    ("5.23.0", "0.20.0"),  # the oldest peft that transformers 5.23 accepts (its MIN_PEFT_VERSION)
    ("5.23.0", "0.18.1"),  # below that minimum: installs, then the adapter calls refuse it
]


def _compat_constraints(transformers: str, peft: str) -> str:
    """constraints/ci.txt with the transformers and peft pins replaced: torch and the rest stay pinned."""
    import re
    from pathlib import Path

    kept = [
        line
        for line in Path("constraints/ci.txt").read_text().splitlines()
        if not re.match(r"\s*(transformers|peft)\s*(==|$)", line)
    ]
    return "\n".join([*kept, f"transformers=={transformers}", f"peft=={peft}"]) + "\n"


def _compat_scenarios() -> list[str]:
    import tomllib
    from pathlib import Path

    files = []
    for path in sorted(Path("scenarios").glob("*.toml")):
        tags = tomllib.loads(path.read_text()).get("scenario", {}).get("tags", [])
        if all(tag in tags for tag in COMPAT_TAGS):
            files.append(str(path))
    return files


def _tail(path, lines: int = 4) -> str:
    """What pip or python said when it gave up: pip's first ERROR line and what follows it (the conflict),
    else the log's last lines (a traceback ends with the exception)."""
    try:
        text = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    first_error = next((i for i, line in enumerate(text) if line.startswith("ERROR:")), None)
    picked = text[first_error : first_error + lines] if first_error is not None else text[-2:]
    return " / ".join(picked)


def _compat_status(folder, transformers: str, peft: str, stage: str, detail: str = "") -> None:
    import json

    status = {"transformers": transformers, "peft": peft, "stage": stage, "detail": detail[-2000:]}
    (folder / "status.json").write_text(json.dumps(status, indent=1) + "\n")


@nox.session
@nox.parametrize(("transformers", "peft"), COMPAT_MATRIX)
def compat(session: nox.Session, transformers: str, peft: str) -> None:
    """Hotswap gating scenarios per transformers x peft pair -> reports/compat/<combo>/ and compat.md."""
    import shutil
    from pathlib import Path

    from nox.command import CommandFailed

    folder = Path(COMPAT_DIR) / f"transformers-{transformers}_peft-{peft}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    constraints = folder / "constraints.txt"
    constraints.write_text(_compat_constraints(transformers, peft))
    render = ("python", "-m", "bench.cli.commands.compat", COMPAT_DIR)
    try:
        with open(folder / "install.log", "w") as log:
            # A custom stdout keeps pip's words for the table (nox then logs nothing of it itself).
            session.install("-c", str(constraints), "-e", ".", stdout=log, silent=False)
    except CommandFailed as exc:
        detail = _tail(folder / "install.log") or f"pip install: {exc.reason}"
        session.log(detail)
        _compat_status(folder, transformers, peft, "install failed", detail)
        session.run(*render)
        return
    freeze = session.run("python", "-m", "pip", "list", "--format=freeze", silent=True)
    (folder / "pip-list.txt").write_text(freeze or "")
    session.log(freeze)
    probe = "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)"
    try:
        with open(folder / "import.log", "w") as log:
            session.run("python", "-c", probe, stdout=log)
    except CommandFailed as exc:
        detail = _tail(folder / "import.log") or f"import: {exc.reason}"
        session.log(detail)
        _compat_status(folder, transformers, peft, "import failed", detail)
        session.run(*render)
        return
    # Exit 1 means a guarantee does not hold: that is the finding, recorded in the table, not a session error.
    try:
        session.run(
            "peft-bench",
            "run",
            *_compat_scenarios(),
            "--out",
            str(folder),
            "--allow-known-broken-versions",  # the matrix shows broken pairs as broken: it must run them
            success_codes=[0, 1],
        )
    except CommandFailed as exc:
        _compat_status(folder, transformers, peft, "run failed", f"peft-bench run failed ({exc.reason})")
        session.run(*render)
        session.error(f"peft-bench run failed for transformers {transformers}, peft {peft}")
    _compat_status(folder, transformers, peft, "ran")
    session.run(*render)


# ---------------------------------------------------------------------------------------------------------
# bisect: the first release (or commit) where a guarantee breaks. Posargs go to `peft-bench bisect`; without
# them it runs the committed search (reports/bisect/transformers-5.20.0..5.24.0). Each probe is a --target
# folder over this session's venv (torch and the other pins from constraints/ci.txt), cached under
# $PEFT_BENCH_CACHE/envs and reused by later searches.
BISECT_DEFAULT = [
    "scenarios/hotswap_alpha.toml",
    "--package",
    "transformers",
    "--good",
    "5.20.0",
    "--bad",
    "5.24.0",
    "--bad-when",
    "expectation:matches_reference",
    "--case",
    "hotswap-alpha[fp32-aot_eager-transformers]",
    "--all",
]


@nox.session
def bisect(session: nox.Session) -> None:
    """`peft-bench bisect` (posargs), by default the hotswap-alpha search over transformers 5.20.0..5.24.0."""
    install(session)
    # Exit 1: no break found inside the range (the good end is bad too, or nothing is): a finding the table
    # records, not a session error.
    session.run("peft-bench", "bisect", *(session.posargs or BISECT_DEFAULT), success_codes=[0, 1])
