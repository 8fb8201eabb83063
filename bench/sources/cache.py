"""A content-keyed folder cache that two runs can fill at the same time.

An entry is built in a private temporary folder next to its final place and renamed into place; rename is
atomic on one file system, so a reader sees either no entry or a complete one. If another run renamed its
copy first, ours is discarded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENV_VAR = "PEFT_BENCH_CACHE"
_COMPLETE = ".complete"


def default_cache_root(env: dict[str, str] | None = None) -> Path:
    """$PEFT_BENCH_CACHE, else ~/.cache/peft-bench. Read once by the CLI or the worker and passed down."""
    env = os.environ if env is None else env
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR]).expanduser()
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "peft-bench"


def library_versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def cache_key(kind: str, spec: dict[str, Any]) -> str:
    """Key over the full spec and the library versions that wrote the files."""
    blob = json.dumps(
        {"kind": kind, "spec": spec, "versions": library_versions()}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_folder(
    root: Path, kind: str, name: str, spec: dict[str, Any], build: Callable[[Path], None]
) -> tuple[Path, bool]:
    """Return (folder, built_now). `build(tmp_dir)` writes the entry's files into tmp_dir."""
    final = root / kind / f"{name}-{cache_key(kind, spec)}"
    if (final / _COMPLETE).exists():
        return final, False
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(tmp)
        (tmp / "spec.json").write_text(
            json.dumps(
                {"kind": kind, "spec": spec, "versions": library_versions()},
                indent=2,
                sort_keys=True,
                default=str,
            )
        )
        (tmp / _COMPLETE).write_text("")
        try:
            os.rename(tmp, final)
        except OSError:
            # Another run finished the same entry first (the target exists and is not empty): use theirs.
            if not (final / _COMPLETE).exists():
                raise
            return final, False
        return final, True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
