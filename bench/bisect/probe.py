"""One probe: build (or reuse) the environment of one version, check it imports, run the scenarios in it,
and judge the results. Everything it learns lands in the probe's own folder (probe.json, results.json)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.bisect import criteria, envs
from bench.bisect.search import UNTESTABLE

PROBE_FILE = "probe.json"
ROOT = Path(__file__).resolve().parent.parent.parent  # the checkout whose bench the probes run


@dataclass(frozen=True)
class Target:
    """What the search varies: a package at a release, or built from a local git checkout at a commit."""

    package: str
    module: str  # what `import` names it
    repo: Path | None = None

    def spec(self, version: str, workdir: Path) -> str:
        if self.repo is None:
            return f"{self.package}=={version}"
        src = workdir / "src"
        subprocess.run(["rm", "-rf", str(src)], check=True)
        src.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(self.repo), "archive", version], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
        return str(src)

    def label(self, version: str) -> str:
        return version[:12] if self.repo is not None else version

    def install_line(self, version: str, constraints: Path) -> str:
        what = f"git+file://{self.repo}@{version}" if self.repo is not None else f"{self.package}=={version}"
        return shlex.join(["pip", "install", "-c", str(constraints), what, "-e", "."])


@dataclass(frozen=True)
class ProbeRecord:
    version: str
    state: str
    reason: str
    stage: str  # install failed | import failed | run failed | ran
    env: str  # the cached --target folder
    env_cached: bool
    installed: tuple[str, ...]
    build_s: float
    run_s: float
    imported: str  # what `import module` reported (version and file)
    repro: tuple[str, ...]  # the commands that reproduce this side


def run_probe(
    target: Target,
    version: str,
    scenarios: list[str],
    criterion: criteria.Criterion,
    cases: tuple[str, ...],
    out: Path,
    cache_root: Path,
    constraints_text: str,
    baseline=None,
    python: str = sys.executable,
    extra_env: dict[str, str] | None = None,
) -> ProbeRecord:
    import time

    label = target.label(version)
    folder = out / f"{target.package}-{label}"
    folder.mkdir(parents=True, exist_ok=True)
    constraints = folder / "constraints.txt"
    constraints.write_text(envs.constraints_without(constraints_text, target.package))
    with open(folder / "install.log", "w") as log:
        env = envs.build(
            cache_root,
            target.package,
            label,
            target.spec(version, folder) if not envs.is_built(cache_root, target.package, label) else "",
            constraints_text,
            python=python,
            log=log,
        )
    if target.repo is not None:
        subprocess.run(["rm", "-rf", str(folder / "src")], check=False)
    base = {
        "version": label,
        "env": str(env.path or ""),
        "env_cached": env.cached,
        "installed": env.installed,
        "build_s": env.build_s,
    }
    scen = [str(s) for s in scenarios]
    # --overwrite: a probe folder is the same for the same version, and a later search replaces its result.
    run_line = shlex.join([python, "-m", "bench", "run", *scen, "--out", str(folder), "--overwrite"])
    repro = (
        target.install_line(version, constraints) + " && " + shlex.join(["peft-bench", "run", *scen]),
        f"PYTHONPATH={env.path}:{ROOT} {run_line}" if env.path else "",
    )
    if env.path is None:
        return _save(
            folder,
            ProbeRecord(
                **base,
                state=UNTESTABLE,
                reason=env.error,
                stage="install failed",
                run_s=0.0,
                imported="",
                repro=repro,
            ),
        )
    child_env = dict(os.environ, **(extra_env or {}))
    child_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(env.path)])
    check = f"import {target.module} as m; print(getattr(m, '__version__', '?'), m.__file__)"
    proc = subprocess.run([python, "-c", check], capture_output=True, text=True, env=child_env, cwd=ROOT)
    imported = proc.stdout.strip()
    if proc.returncode != 0:
        reason = "import failed: " + (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return _save(
            folder,
            ProbeRecord(
                **base,
                state=UNTESTABLE,
                reason=reason,
                stage="import failed",
                run_s=0.0,
                imported="",
                repro=repro,
            ),
        )
    if str(env.path) not in imported:  # the base's own copy won: the probe would test the wrong version
        reason = f"import failed: {target.module} came from outside the probe folder ({imported})"
        return _save(
            folder,
            ProbeRecord(
                **base,
                state=UNTESTABLE,
                reason=reason,
                stage="import failed",
                run_s=0.0,
                imported=imported,
                repro=repro,
            ),
        )
    start = time.perf_counter()
    # No --allow-known-broken-versions: a known-broken pair cannot answer the question, and its refusal
    # (exit 2, bench/versions.py) makes the probe `untestable` with the reason and the fix.
    cmd = [python, "-m", "bench", "run", *scen, "--out", str(folder), "--overwrite", "-q"]
    with open(folder / "run.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env, cwd=ROOT)
    run_s = round(time.perf_counter() - start, 1)
    results_file = folder / "results.json"
    if proc.returncode not in (0, 1) or not results_file.is_file():
        tail = " / ".join((folder / "run.log").read_text(errors="replace").strip().splitlines()[-2:])
        return _save(
            folder,
            ProbeRecord(
                **base,
                state=UNTESTABLE,
                reason=f"run failed (exit {proc.returncode}): {tail}",
                stage="run failed",
                run_s=run_s,
                imported=imported,
                repro=repro,
            ),
        )
    from bench.results import load

    state, reason = criteria.judge(criterion, load(results_file), cases, baseline)
    return _save(
        folder,
        ProbeRecord(
            **base, state=state, reason=reason, stage="ran", run_s=run_s, imported=imported, repro=repro
        ),
    )


def _save(folder: Path, record: ProbeRecord) -> ProbeRecord:
    (folder / PROBE_FILE).write_text(json.dumps(asdict(record), indent=1) + "\n")
    return record
