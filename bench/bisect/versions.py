"""The candidates of a search, oldest first: published releases from the package index, or git commits.

Releases come from `pip index versions`, so pip's own configuration (index URL, find-links, certificates)
decides where they come from, the same index the probe environments install from.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bench.errors import BenchInputError


def version_key(version: str):
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version)
    except InvalidVersion:
        raise BenchInputError(f"not a release version: {version!r}") from None


def between(available: list[str], good: str, bad: str, *, pre: bool = False) -> list[str]:
    """The releases from good to bad inclusive, oldest first (pre-releases only with pre=True)."""
    lo, hi = version_key(good), version_key(bad)
    if not lo < hi:
        raise BenchInputError(f"--good {good} must be an older release than --bad {bad}")
    picked = sorted({v for v in available if lo <= version_key(v) <= hi}, key=version_key)
    picked = [v for v in picked if pre or not version_key(v).is_prerelease or v in (good, bad)]
    for end, flag in ((good, "--good"), (bad, "--bad")):
        if end not in picked:
            raise BenchInputError(f"{flag} {end} is not a published release (index has: {', '.join(picked)})")
    return picked


def parse_pip_index(text: str) -> list[str]:
    match = re.search(r"^Available versions:\s*(.+)$", text, re.M)
    if not match:
        return []
    return [v.strip() for v in match.group(1).split(",") if v.strip()]


def index_versions(package: str, python: str = sys.executable) -> list[str]:
    proc = subprocess.run(
        [python, "-m", "pip", "index", "versions", package, "--pre"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    found = parse_pip_index(proc.stdout)
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BenchInputError(f"pip index versions {package} listed no releases: {tail[0]}")
    return found


def releases(package: str, good: str, bad: str) -> list[str]:
    return between(index_versions(package), good, bad)


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchInputError(f"git {' '.join(args)}: {proc.stderr.strip()}", source=str(repo))
    return proc.stdout


def commits(repo: Path, good: str, bad: str) -> list[str]:
    """Full hashes from good to bad inclusive along the first-parent line, oldest first."""
    if not (Path(repo) / ".git").exists():
        raise BenchInputError("not a git checkout", source=str(repo))
    good_sha = _git(repo, "rev-parse", "--verify", f"{good}^{{commit}}").strip()
    bad_sha = _git(repo, "rev-parse", "--verify", f"{bad}^{{commit}}").strip()
    if subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", good_sha, bad_sha]).returncode:
        raise BenchInputError(f"--good {good} is not an ancestor of --bad {bad}", source=str(repo))
    line = _git(repo, "rev-list", "--first-parent", "--reverse", f"{good_sha}..{bad_sha}").split()
    return [good_sha, *line]


def subject(repo: Path, sha: str) -> str:
    return _git(repo, "log", "-1", "--format=%h %s", sha).strip()
