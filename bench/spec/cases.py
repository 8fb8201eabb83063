"""Scenario -> cases: the matrix expanded, one case per combination, each with a stable id."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from bench.errors import BenchInputError
from bench.spec.codec import from_dict, to_dict
from bench.spec.schema import DEFAULT_HOTSWAP_PATH, CompileSetting, Scenario


@dataclass(frozen=True)
class Case:
    """One cell of a scenario's matrix: what one isolated worker process runs."""

    scenario: Scenario
    precision: str
    compile: CompileSetting
    hotswap_path: str
    strategy: str = ""  # serving scenarios: the serve step's switching strategy; "" elsewhere

    @property
    def params(self) -> dict[str, str]:
        params = {
            "precision": self.precision,
            "compile": self.compile.label,
            "hotswap_path": self.hotswap_path,
        }
        if self.strategy:
            params["strategy"] = self.strategy
        return params

    @property
    def uses_hotswap_path(self) -> bool:
        """Only the hotswap strategy (or a scenario that is not a serving one) depends on the path."""
        return self.strategy in ("", "hotswap")

    @property
    def id(self) -> str:
        # Only axes with more than one value, plus precision and compile which every reader wants to see.
        parts = [self.precision, self.compile.label]
        if self.strategy:
            parts.append(self.strategy)
        if self.uses_hotswap_path and (
            len(self.scenario.matrix.hotswap_path) > 1 or self.hotswap_path != DEFAULT_HOTSWAP_PATH
        ):
            parts.append(self.hotswap_path)
        return f"{self.scenario.name}[{'-'.join(parts)}]"

    def to_dict(self) -> dict:
        """The case as JSON data: what the worker is handed and what its result keeps."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Case:
        return from_dict(cls, data)

    @property
    def file_stem(self) -> str:
        """A file-system-safe name for this case's files (ids hold '[', '+' and ']')."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.id).strip("_")


# A selection beyond this is refused (`--max-cases` raises it): each case is a worker process of seconds to
# minutes, and expanding 10^6 cases alone takes minutes before the first one runs.
DEFAULT_MAX_CASES = 10_000


def selection_size(scenarios: list[Scenario]) -> int:
    """How many cases the scenarios expand to, from the matrix axes' lengths (no expansion)."""
    total = 0
    for s in scenarios:
        m = s.matrix
        total += len(m.precision) * len(m.compile) * _path_strategy_cells(m)
    return total


def _path_strategy_cells(m) -> int:
    """hotswap_path x strategy cells: strategies other than hotswap do not depend on the path (one cell each)."""
    if not m.strategy:
        return len(m.hotswap_path)
    return sum(len(m.hotswap_path) if st == "hotswap" else 1 for st in m.strategy)


def check_selection_size(scenarios: list[Scenario], max_cases: int) -> None:
    n = selection_size(scenarios)
    if n > max_cases:
        biggest = max(scenarios, key=lambda s: selection_size([s]))
        raise BenchInputError(
            f"the selection expands to {n} cases, more than --max-cases {max_cases} "
            f"(the largest matrix: {biggest.name}, {selection_size([biggest])}); raise --max-cases to run it",
            source=biggest.source_file,
            field="matrix",
        )


def expand(scenario: Scenario) -> list[Case]:
    m = scenario.matrix
    cells = [
        (h, st)
        for st in (m.strategy or ("",))
        for h in (m.hotswap_path if st in ("", "hotswap") else m.hotswap_path[:1])
    ]
    return [
        Case(scenario=scenario, precision=p, compile=c, hotswap_path=h, strategy=st)
        for p, c, (h, st) in itertools.product(m.precision, m.compile, cells)
    ]


def expand_all(scenarios: list[Scenario]) -> list[Case]:
    cases = [c for s in scenarios for c in expand(s)]
    if not cases:
        raise BenchInputError("the selection expands to no case")
    return cases


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not m:
            raise BenchInputError(f"--shard: expected K/N such as 1/4, got {text!r}")
        k, n = int(m.group(1)), int(m.group(2))
        if n < 1 or not 1 <= k <= n:
            raise BenchInputError(f"--shard: K must be between 1 and N, got {k}/{n}")
        return cls(k, n)

    def select(self, cases: list[Case]) -> list[Case]:
        """Round-robin over the cases sorted by id: the N shards partition any selection exactly."""
        ordered = sorted(cases, key=lambda c: c.id)
        return [c for i, c in enumerate(ordered) if i % self.count == self.index - 1]


def selection_fingerprint(cases: list[Case]) -> tuple[int, str]:
    """What a run records of the whole selection it is part of (Results.selection_cases and selection_sha256):
    how many cases, and the
    sha256 of every case's id and spec, sorted by id. Shards of one selection share it; a shard run after the
    scenario file changed, or with another -k or --tag, does not, though its ids may still fit the round-robin
    of the others (merge would lose a case, or join two versions of a scenario). The file the scenario was
    read from is left out: two jobs may name it by different paths."""
    import hashlib
    import json

    digest = hashlib.sha256()
    for case in sorted(cases, key=lambda c: c.id):
        data = case.to_dict()
        data["scenario"] = {k: v for k, v in data["scenario"].items() if k != "source_file"}
        digest.update(f"{case.id}\t{json.dumps(data, sort_keys=True, separators=(',', ':'))}\n".encode())
    return len(cases), digest.hexdigest()
