"""One probe: build (or reuse) the environment of one version, check where it imports from, run the
scenarios in it (or take an identical earlier run), and judge the results. Everything it learns lands in
the probe's own folder (probe.json, results.json)."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.bisect import criteria, envs
from bench.bisect.search import UNTESTABLE
from bench.results.store import load, remove_run_outputs
from bench.runner.zygote import PRELOAD

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
    imported: str  # where `import module` loads from: its distribution's version and file
    repro: tuple[str, ...]  # the commands that reproduce this side
    results_reused: bool = False  # judged a run stored by an earlier search (bench.bisect.probe.run_key)


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
    rerun: bool = False,
) -> ProbeRecord:
    """Long because: a probe is one fixed sequence (environment, install, run, read back), each stage writing
    why it failed into the same result."""
    import time

    # The run below starts in ROOT: a path relative to the caller's folder would name another file there (or
    # none, and every probe would be `run failed`; issue 32).
    out, cache_root = Path(out).absolute(), Path(cache_root).absolute()
    scenarios = [str(Path(s).absolute()) for s in scenarios]
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
    # Where `import module` would load from, asked without importing it: a start of torch, transformers and
    # peft costs seconds, and every case imports them anyway. Any other module is imported here first.
    imported, found = locate(python, target.module, target.package, child_env)
    failure = (
        "" if not found or run_imports(target.module) else import_error(python, target.module, child_env)
    )
    if not found or failure or str(env.path) not in imported:  # the base's own copy won: wrong version
        reason = f"import failed: {target.module} came from outside the probe folder ({imported})"
        if not found or failure:
            reason = f"import failed: {failure or imported}"
        return _save(
            folder,
            ProbeRecord(
                **base,
                state=UNTESTABLE,
                reason=reason,
                stage="import failed",
                run_s=0.0,
                imported=imported if found else "",
                repro=repro,
            ),
        )
    key = run_key(label, env, scen, python, child_env)
    stored = cache_root / RUNS_DIR / key
    results_file = folder / "results.json"
    reused = not rerun and (stored / "results.json").is_file()
    run_s = 0.0
    # An earlier search's results in this folder must not outlive a probe that does not run (a refused
    # known-broken pair exits before --overwrite removes anything): seen as a rules-1 results.json beside a
    # rules-3 probe record.
    remove_run_outputs(folder)
    if reused:  # the same version, scenarios, environment and harness already ran: judge that run again
        for name in ("results.json", "run.log"):
            if (stored / name).is_file():
                shutil.copyfile(stored / name, folder / name)
        run_s = json.loads((stored / RUN_FILE).read_text())["run_s"]
        returncode = 0
    else:
        start = time.perf_counter()
        # No --allow-known-broken-versions: a known-broken pair cannot answer the question, and its refusal
        # (exit 2, bench/spec/library_pairs.py) makes the probe `untestable` with the reason and the fix.
        cmd = [python, "-m", "bench", "run", *scen, "--out", str(folder), "--overwrite", "-q"]
        with open(folder / "run.log", "w") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env, cwd=ROOT)
        run_s = round(time.perf_counter() - start, 1)
        returncode = proc.returncode
    results = load(results_file) if returncode in (0, 1) and results_file.is_file() else None
    if import_in_doubt(target.module, results):
        failure = import_error(python, target.module, child_env)
        if failure:
            return _save(
                folder,
                ProbeRecord(
                    **base,
                    state=UNTESTABLE,
                    reason=f"import failed: {failure}",
                    stage="import failed",
                    run_s=run_s,
                    imported=imported,
                    repro=repro,
                ),
            )
    if results is None:
        tail = " / ".join((folder / "run.log").read_text(errors="replace").strip().splitlines()[-2:])
        return _save(
            folder,
            ProbeRecord(
                **base,
                state=UNTESTABLE,
                reason=f"run failed (exit {returncode}): {tail}",
                stage="run failed",
                run_s=run_s,
                imported=imported,
                repro=repro,
            ),
        )
    if not reused:
        keep_run(stored, folder, run_s)
    state, reason = criteria.judge(criterion, results, cases, baseline)
    return _save(
        folder,
        ProbeRecord(
            **base,
            state=state,
            reason=reason,
            stage="ran",
            run_s=run_s,
            imported=imported,
            repro=repro,
            results_reused=reused,
        ),
    )


# Verdicts of a case that got as far as running its steps: the module under test imported.
RAN_VERDICTS = ("pass", "fail", "xfail", "xpass")
RUNS_DIR = "runs"  # under the cache root: one finished run per key (run_key), for later searches to judge
RUN_FILE = "run.json"
# The environment that changes what a run measures (threads, torch and library switches, the harness's cache).
RUN_ENV_PREFIXES = ("OMP_", "MKL_", "TORCH", "PYTORCH", "CUDA", "HF_", "TRANSFORMERS", "PEFT_BENCH", "PYTHON")


def run_imports(module: str) -> bool:
    """Does every case import `module` (the preloaded worker's list), so that a version that fails to import
    shows in the run's own verdicts? bench.runner.zygote.PRELOAD names them without importing torch here."""

    return module.split(".")[0] in PRELOAD


def import_in_doubt(module: str, results) -> bool:
    """After the run: could a failed import of `module` explain what the run gave? Not for a module imported
    before the run (not one every case imports); else only when the run gave no results or some case
    stopped before its steps ran (error, skip, not_run): a case that passed or failed imported it."""
    if not run_imports(module):
        return False
    return results is None or any(c.verdict not in RAN_VERDICTS for c in results.cases)


def locate(python: str, module: str, package: str, env: dict) -> tuple[str, bool]:
    """("VERSION FILE", True) for where `import module` would load from under `env`, without importing it;
    (the error, False) when it cannot be found."""
    code = (
        "import importlib.util as u, importlib.metadata as m, sys\n"
        "spec = u.find_spec(sys.argv[1])\n"
        "if spec is None:\n"
        "    sys.exit(f'ModuleNotFoundError: No module named {sys.argv[1]!r}')\n"
        "try:\n"
        "    version = m.version(sys.argv[2])\n"
        "except m.PackageNotFoundError:\n"
        "    version = '?'\n"
        "print(version, spec.origin or list(spec.submodule_search_locations or []))\n"
    )
    proc = subprocess.run(
        [python, "-c", code, module, package], capture_output=True, text=True, env=env, cwd=ROOT
    )
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["no output"])[-1], False
    return proc.stdout.strip(), True


def import_error(python: str, module: str, env: dict) -> str:
    """The last line of the error `import module` raises under `env`, or "" when it imports."""
    proc = subprocess.run(
        [python, "-c", f"import {module}"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    if proc.returncode == 0:
        return ""
    return (proc.stderr.strip().splitlines() or ["no output"])[-1]


def run_key(label: str, env: envs.ProbeEnv, scenarios: list[str], python: str, child_env: dict) -> str:
    """What a probe's run depends on: the version and what its folder holds, the scenario files, the
    harness's own code, the interpreter and the environment variables that change a run. A later search
    with another --bad-when judges the stored run instead of running it again (--rerun: run anyway)."""
    h = hashlib.sha256()

    def add(*parts) -> None:
        for part in parts:
            h.update(part if isinstance(part, bytes) else str(part).encode())
            h.update(b"\0")

    add(label, *env.installed, str(env.path), python, sys.version)
    for name in sorted(k for k in child_env if k.startswith(RUN_ENV_PREFIXES)):
        add(name, child_env[name])
    for path in [*_files(scenarios), *sorted((ROOT / "bench").rglob("*.py"))]:
        add(path, path.read_bytes())
    return h.hexdigest()[:24]


def _files(scenarios: list[str]) -> list[Path]:
    out = []
    for s in map(Path, scenarios):
        out += sorted(p for p in s.rglob("*") if p.is_file()) if s.is_dir() else [s]
    return out


def keep_run(stored: Path, folder: Path, run_s: float) -> None:
    """Store a finished run under its key (whole or not at all: written aside, then renamed into place)."""
    stored.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=stored.name + ".", dir=stored.parent))
    for name in ("results.json", "run.log"):
        if (folder / name).is_file():
            shutil.copyfile(folder / name, staging / name)
    (staging / RUN_FILE).write_text(json.dumps({"run_s": run_s, "from": str(folder)}) + "\n")
    shutil.rmtree(stored, ignore_errors=True)
    try:
        staging.rename(stored)
    except OSError:  # another search stored the same run meanwhile
        shutil.rmtree(staging, ignore_errors=True)


def _save(folder: Path, record: ProbeRecord) -> ProbeRecord:
    (folder / PROBE_FILE).write_text(json.dumps(asdict(record), indent=1) + "\n")
    return record
