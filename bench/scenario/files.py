"""Which paths the loader reads: regular files only, up to a size limit.

A FIFO named *.toml would block the loader forever, and /dev/zero linked as one would be read until memory
runs out; a scenario is a small text file, so anything else is refused with the reason.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bench.errors import ScenarioError
from bench.results.outfiles import file_kind

MAX_SCENARIO_BYTES = 2**20  # 1 MiB: the largest shipped scenario is a few KiB


def check_scenario_file(path: Path) -> None:
    """Raise ScenarioError unless `path` (links followed) is a regular file of at most MAX_SCENARIO_BYTES."""
    source = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ScenarioError("is a link to a missing file", source=source) from None
        raise ScenarioError("no such file", source=source) from None
    except OSError as exc:
        raise ScenarioError(f"cannot read: {exc.strerror}", source=source) from None
    if stat.S_ISDIR(st.st_mode):
        raise ScenarioError("is a directory, expected a .toml file", source=source)
    if not stat.S_ISREG(st.st_mode):
        raise ScenarioError(
            f"is {file_kind(st.st_mode)}, not a regular file: scenarios are read from regular files only",
            source=source,
        )
    if st.st_size > MAX_SCENARIO_BYTES:
        raise ScenarioError(
            f"is {st.st_size} bytes, more than the {MAX_SCENARIO_BYTES} a scenario file may have",
            source=source,
        )
