"""Which cases a command selects: scenario paths, tags, keywords, a shard (run and list share it)."""

from __future__ import annotations

import os

from bench.cli.ci import select_tags, shard_from_env
from bench.errors import BenchInputError
from bench.scenario import load_scenarios
from bench.spec.cases import Shard, check_selection_size, expand_all

DEFAULT_SCENARIOS = "scenarios"  # what `run` and `list` select when given no path


def select_cases(
    paths: list[str],
    shard: str | None,
    max_cases: int,
    tags: list[str] = (),
    keywords: list[str] = (),
    skip_tags: list[str] = (),
):
    scenarios = load_scenarios(paths)
    check_selection_size(scenarios, max_cases)  # from the axes' lengths, before expanding the product
    cases = select_tags(expand_all(scenarios), list(tags), list(skip_tags))
    if not cases and (tags or skip_tags):  # run and list alike (list printed nothing and exited 0)
        raise BenchInputError(
            " ".join([*(f"--tag {t}" for t in tags), *(f"--skip-tag {t}" for t in skip_tags)])
            + ": no scenario is left by these tags"
        )
    if keywords:
        cases = [c for c in cases if any(k in c.id for k in keywords)]
        if not cases:
            raise BenchInputError(f"-k {' '.join(keywords)}: no case id contains any of these")
    if shard:
        text = shard_text(shard)
        cases = Shard.parse(text).select(cases)
        if not cases:
            raise BenchInputError(f"--shard {text}: no case selected (the selection has fewer cases than N)")
    return cases


def shard_text(shard: str) -> str:
    return shard_from_env(os.environ) if shard.strip() == "auto" else shard
