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
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.engine import rng

ENV_VAR = "PEFT_BENCH_CACHE"
_COMPLETE = ".complete"
# sha256 of every tensor file, written when the entry is built and checked before each use: an entry whose
# weights changed since (bit rot, an edit, a tool that rewrote the data behind an intact header) would be
# loaded by the subject and the reference alike, so every comparison would pass on the wrong weights.
CONTENT_FILE = "content-sha256.json"
TENSOR_SUFFIXES = (".safetensors", ".bin", ".pt")


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


def content_hashes(folder: Path) -> dict[str, str]:
    """{file name: sha256} of the tensor files in a cache entry (streamed: a large model never sits in memory)."""
    out = {}
    for f in sorted(Path(folder).rglob("*")):
        if f.is_file() and f.suffix in TENSOR_SUFFIXES:
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            out[f.relative_to(folder).as_posix()] = h.hexdigest()
    return out


def entry_problem(folder: Path) -> str | None:
    """Why a complete-looking entry must not be used (None: its tensors are what was built)."""
    try:
        recorded = json.loads((folder / CONTENT_FILE).read_text())
    except FileNotFoundError:
        return "it has no content hash (built before hashes were recorded)"
    except (OSError, ValueError) as exc:
        return f"its {CONTENT_FILE} is unreadable ({exc})"
    if not isinstance(recorded, dict) or not recorded:
        return f"its {CONTENT_FILE} records no tensor file"
    actual = content_hashes(folder)
    for file, digest in sorted(recorded.items()):
        if file not in actual:
            return f"{file} is missing"
        if actual[file] != digest:
            return f"{file} does not match the sha256 recorded when it was built (its contents changed)"
    extra = sorted(set(actual) - set(recorded))
    if extra:
        return f"{extra[0]} was not part of the entry when it was built"
    return None


def changed_since(root: Path, since_epoch_s: float) -> list[str]:
    """What went wrong with the cache entries whose tensor files changed after `since_epoch_s`: one line each
    naming the file ("models/tiny-llama-3f2c.../model.safetensors: does not match ...").

    For a case that failed or raised: an entry truncated or rewritten while the case read it makes the
    library raise about a header or a shape, naming no file. Only entries touched since the case began are
    hashed (a stat of the others), so a large cache costs nothing here; an entry the case built itself
    matches its hashes and is not listed."""
    lines = []
    for content in sorted(Path(root).glob(f"*/*/{CONTENT_FILE}")):
        folder = content.parent
        try:
            touched = any(
                f.stat().st_mtime >= since_epoch_s
                for f in folder.rglob("*")
                if f.suffix in TENSOR_SUFFIXES and f.is_file()
            )
        except OSError:
            touched = True  # removed while we looked: say what is left of it
        if touched and (why := entry_problem(folder)) is not None:
            lines.append(f"{folder.relative_to(root).as_posix()}: {why}")
    return lines


def _discard(final: Path, why: str) -> None:
    """Move a bad entry out of the way (rename is atomic: no reader sees it half deleted), then delete it."""
    print(f"peft-bench: cache entry {final} is rebuilt: {why}", file=sys.stderr, flush=True)
    stale = Path(tempfile.mkdtemp(prefix=f".{final.name}.stale.", dir=final.parent))
    try:
        os.rename(final, stale / "entry")
    except FileNotFoundError:
        pass  # another run discarded it first
    shutil.rmtree(stale, ignore_errors=True)


def cached_folder(
    root: Path, kind: str, name: str, spec: dict[str, Any], build: Callable[[Path], None]
) -> tuple[Path, bool]:
    """Return (folder, built_now). `build(tmp_dir)` writes the entry's files into tmp_dir.

    An existing entry is used only if its tensor files still have the sha256 recorded when it was built;
    otherwise (changed, missing, or an entry from before hashes were recorded) it is rebuilt."""
    final = root / kind / f"{name}-{cache_key(kind, spec)}"
    if (final / _COMPLETE).exists():
        why = entry_problem(final)
        if why is None:
            return final, False
        _discard(final, why)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        # A build may draw from torch's global generator (peft's own init of the layers it overwrites):
        # on a private copy, so a case's seeded figures do not depend on whether its sources were cached.
        with rng.isolated():
            build(tmp)
        (tmp / CONTENT_FILE).write_text(json.dumps(content_hashes(tmp), indent=1, sort_keys=True))
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
