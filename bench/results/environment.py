"""The environment block every results file and report starts with."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

from bench import __version__
from bench.results.atomic import write_json
from bench.results.records import Environment
from bench.spec.codec import to_dict

LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "bitsandbytes",
    "safetensors",
    "pandas",
    "psutil",
    "nvidia-ml-py",
)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU's model name and, where /proc/cpuinfo gives them, its family, model and stepping.

    Why more than the name: a VM may show a name as bare as "AMD EPYC" for CPUs of different generations. Two
    2-core VMs of the same kind, both "AMD EPYC", built a case's records in 0.351 and 0.152 ms
    (benchmarks/load_parts.py, 2026-12-05 and 2026-12-06): by the name alone, `compare` would have set their
    absolute times side by side and the cost estimate calibrated one on the other. `cpuinfo`: the file's
    text (read from /proc where None)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block is enough: a VM's cores are alike
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    parts = [f"{key} {fields[key]}" for key in ("cpu family", "model", "stepping") if fields.get(key)]
    return f"{name} ({', '.join(parts)})" if parts else name


def git_commit(repo: Path | None = None) -> str | None:
    repo = repo or Path(__file__).resolve().parents[2]  # the checkout holding the bench package
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str | None]:
    """The installed versions of the libraries a run records, without importing any of them."""
    return {name: _version(name) for name in LIBRARIES}


def probe_main(argv: list[str]) -> int:
    """Worker entry (forked from the preloaded worker, bench.runner.run.environment_via): collect() into argv[0]."""

    write_json(Path(argv[0]), to_dict(collect()))
    return 0


def collect() -> Environment:
    import torch

    cuda = torch.cuda.is_available()
    return Environment(
        python=sys.version.split()[0],
        platform=platform.platform(),
        cpu=cpu_name(),
        cpu_count=os.cpu_count() or 0,
        device="cuda" if cuda else "cpu",
        gpu=torch.cuda.get_device_name(0) if cuda else None,
        libraries=library_versions(),
        suite_version=__version__,
        git_commit=git_commit(),
        hostname=socket.gethostname(),
        torch_threads=torch.get_num_threads(),
    )


def same_machine(a: Environment, b: Environment) -> bool:
    """Timings are comparable only between runs on the same kind of machine, with the same libraries and the
    same number of torch threads."""

    def key(e: Environment) -> tuple:
        return (e.cpu, e.cpu_count, e.device, e.gpu, e.libraries.get("torch"), e.torch_threads)

    return key(a) == key(b)
