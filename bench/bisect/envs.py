"""Probe environments: the bisected package at one version, layered over the running interpreter.

Building a full virtualenv per probe costs ~30 s of torch install alone. Instead each probe environment is a
`pip install --target` folder holding only what differs from the base environment: pip resolves the probed
version with every other package pinned from constraints/ci.txt (torch's CPU pin included), and only the
distributions whose resolved version is not the one already installed go into the folder. The probe runs
the base interpreter with the folder first on PYTHONPATH, so torch and the pinned rest come from the base.

Folders live under $PEFT_BENCH_CACHE/envs/<package>-<version> and are reused by every later search; a folder
counts as built only once its env.json is written (an interrupted build is rebuilt).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ENV_FILE = "env.json"


@dataclass(frozen=True)
class ProbeEnv:
    path: Path | None  # the --target folder to put first on PYTHONPATH; None when it could not be built
    installed: tuple[str, ...]  # name==version of what the folder holds
    cached: bool  # reused from an earlier search
    error: str  # why it could not be built, or ""
    build_s: float


def env_dir(cache_root: Path, package: str, version: str) -> Path:
    return Path(cache_root) / "envs" / f"{package}-{re.sub(r'[^A-Za-z0-9_.+-]', '_', version)}"


def constraints_without(constraints_text: str, package: str) -> str:
    """constraints/ci.txt minus the bisected package's own pin: the other packages stay where CI has them."""
    name = re.escape(package)
    kept = [
        ln for ln in constraints_text.splitlines() if not re.match(rf"\s*{name}\s*([=<>!~;]|$)", ln, re.I)
    ]
    return "\n".join(kept) + "\n"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def base_versions(python: str) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m;"
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions() if d.metadata['Name']}))"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout
    return {_normal(k): v for k, v in json.loads(out).items()}


def pip_error(text: str, lines: int = 4) -> str:
    """pip's first ERROR line and what follows it (the conflict), else its last lines."""
    text_lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = next((i for i, ln in enumerate(text_lines) if ln.startswith("ERROR:")), None)
    picked = text_lines[first : first + lines] if first is not None else text_lines[-2:]
    return " / ".join(picked)


def build(
    cache_root: Path,
    package: str,
    version: str,
    spec: str,
    constraints_text: str,
    *,
    python: str = sys.executable,
    log=None,
) -> ProbeEnv:
    """The probe folder for `spec` (`pkg==version`, or a local source folder of the package at `version`)."""
    import time

    start = time.perf_counter()
    folder = env_dir(cache_root, package, version)
    if (folder / ENV_FILE).is_file():
        meta = json.loads((folder / ENV_FILE).read_text())
        return ProbeEnv(folder, tuple(meta["installed"]), True, "", 0.0)
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bisect-") as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(constraints_without(constraints_text, package))
        report = Path(tmp) / "report.json"
        pip = [python, "-m", "pip", "--disable-pip-version-check"]
        # The probed package as one wheel first: a source folder is built once (an isolated build costs
        # seconds), not again by the resolve and the install; a release is fetched once.
        wheels = Path(tmp) / "wheels"
        proc = subprocess.run(
            [*pip, "wheel", "--no-deps", "-c", str(constraints), "-w", str(wheels), spec],
            capture_output=True,
            text=True,
        )
        _log(log, proc)
        built = sorted(wheels.glob("*.whl")) if proc.returncode == 0 else []
        if len(built) != 1:
            return ProbeEnv(None, (), False, f"install failed: {pip_error(proc.stderr)}", _since(start))
        wheel = str(built[0])
        wanted: list[str] = []
        if requires(built[0]):  # what else it needs, resolved with everything else pinned
            resolve = [*pip, "install", "--dry-run", "--ignore-installed", "--report", str(report)]
            proc = subprocess.run([*resolve, "-c", str(constraints), wheel], capture_output=True, text=True)
            _log(log, proc)
            if proc.returncode != 0:
                return ProbeEnv(None, (), False, f"install failed: {pip_error(proc.stderr)}", _since(start))
            resolved = {
                _normal(item["metadata"]["name"]): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]
            }
            base = base_versions(python)
            wanted = [
                f"{name}=={v}"
                for name, v in sorted(resolved.items())
                if name != _normal(package) and base.get(name) != v
            ]
        staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
        target = [*pip, "install", "--no-deps", "--no-compile", "--target", str(staging)]
        for what in ([wheel], wanted):
            if not what:
                continue
            proc = subprocess.run([*target, *what], capture_output=True, text=True)
            _log(log, proc)
            if proc.returncode != 0:
                shutil.rmtree(staging, ignore_errors=True)
                return ProbeEnv(None, (), False, f"install failed: {pip_error(proc.stderr)}", _since(start))
    installed = (f"{package}=={version}", *wanted)
    (staging / ENV_FILE).write_text(json.dumps({"spec": spec, "installed": list(installed)}, indent=1) + "\n")
    staging.rename(folder)
    return ProbeEnv(folder, installed, False, "", _since(start))


def requires(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist lines (its METADATA): none means nothing else to resolve."""
    import zipfile
    from email.parser import HeaderParser

    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        meta = HeaderParser().parsestr(z.read(name).decode("utf-8", "replace"))
    return meta.get_all("Requires-Dist") or []


def _since(start: float) -> float:
    import time

    return round(time.perf_counter() - start, 1)


def _log(log, proc: subprocess.CompletedProcess) -> None:
    if log is not None:
        log.write(" ".join(map(str, proc.args)) + "\n" + proc.stdout + proc.stderr + "\n")


def is_built(cache_root: Path, package: str, version: str) -> bool:
    return (env_dir(cache_root, package, version) / ENV_FILE).is_file()
