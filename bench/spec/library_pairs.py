"""Library version pairs known not to work together, refused at start-up with the fix.

pip cannot express "transformers < 5.24 unless peft >= 0.22", and pinning transformers below 5.24 would
also refuse the pair that will work once peft 0.22 is out (and make the compat matrix's 5.24 row an install
failure of our own making instead of the library's behaviour). So pyproject keeps plain ranges and the CLI
checks the installed pair before anything runs: a user whose `pip install -e .` resolved a broken pair gets
one line with the fix (exit 2) instead of every case failing. The compat matrix (`nox -s compat`) runs such
pairs on purpose, with --allow-known-broken-versions, to show them as broken. `peft-bench bisect` does not
pass it: a probe of such a pair is `untestable` with this reason and fix.

Rules are data; the decision is a pure function of version strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from packaging.version import InvalidVersion, Version


@dataclass(frozen=True)
class BrokenPair:
    transformers_from: tuple[int, ...]  # this release and later ...
    peft_below: tuple[int, ...]  # ... with a peft older than this
    what: str
    fix: str


KNOWN_BROKEN: tuple[BrokenPair, ...] = (
    BrokenPair(
        transformers_from=(5, 24),
        peft_below=(0, 22),
        # 5.25.0 (published by 2026-12-06) keeps the same MIN_PEFT_VERSION and the same seven checks:
        # tests/spec/test_versions.py installs both releases for real.
        what="transformers 5.24 and later (5.25 too) refuse peft < 0.22 in add_adapter, set_adapter, "
        "enable_adapters, disable_adapters, active_adapters and delete_adapter (ValueError; only load_adapter "
        "does not check), so every case would fail",
        fix="pip install 'transformers<5.24' (or peft>=0.22 once it is released)",
    ),
)


def _release(text: str) -> tuple[int, ...] | None:
    try:
        return Version(text).release  # 5.24.0.dev0 -> (5, 24, 0): a dev build of 5.24 has 5.24's check
    except InvalidVersion:
        return None


def broken_pair(transformers: str | None, peft: str | None) -> BrokenPair | None:
    """The rule the pair breaks, or None. Unknown or unparsable versions break no rule."""
    t, p = _release(transformers or ""), _release(peft or "")
    if t is None or p is None:
        return None
    for rule in KNOWN_BROKEN:
        if t >= rule.transformers_from and p < rule.peft_below:
            return rule
    return None


def installed_versions() -> tuple[str | None, str | None]:
    """(transformers, peft) as installed, read from package metadata (neither is imported)."""

    def get(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return get("transformers"), get("peft")


def refusal(transformers: str | None, peft: str | None) -> str | None:
    rule = broken_pair(transformers, peft)
    if rule is None:
        return None
    return (
        f"transformers {transformers} with peft {peft} is a known-broken pair: {rule.what}; fix: {rule.fix} "
        "(--allow-known-broken-versions runs anyway)"
    )
