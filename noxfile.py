"""Nox sessions: the ways users and CI run peft-bench.

Every session installs what it needs from the repo's own files. On CPU machines torch is pinned to the CPU
wheel through constraints/ci.txt (an unpinned torch pulls a multi-GB CUDA build); users installing
peft-bench themselves keep their own torch.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

CONSTRAINTS = ("-c", "constraints/ci.txt")


def install(session: nox.Session, *extras: str) -> None:
    target = f".[{','.join(extras)}]" if extras else "."
    session.install(*CONSTRAINTS, "-e", target)
    session.run("python", "-m", "pip", "list", "--format=freeze", silent=False)


@nox.session
def tests(session: nox.Session) -> None:
    """The project's own test suite (what .ci/run and the README call)."""
    install(session, "test")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the default scenarios and write results and reports under reports/. Posargs go to `peft-bench run`."""
    install(session, "quant", "report")
    args = session.posargs or ["scenarios"]
    session.run("peft-bench", "run", *args)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*CONSTRAINTS, "ruff")
    session.run("ruff", "check", "bench", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "bench", "tests", "noxfile.py")
