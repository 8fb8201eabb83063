"""The shipped Slurm example under a real scheduler: examples/slurm/run_array.sbatch as a job array, then
examples/slurm/merge.sbatch after it (--dependency=afterany), submitted with sbatch as a user would.

Needs Debian's slurm-wlm and munge and root (`nox -s slurm` installs them and sets PEFT_BENCH_SLURM=1);
skipped otherwise, so the normal suite never needs Slurm. The fixture starts munged, slurmctld and slurmd on
localhost from a generated configuration in a scratch folder (one node with this machine's cores, no
accounting, free ports) and stops them and removes the folder at the end, pass or fail.

What is checked on what came back:
- every case of the selection is in the merged results exactly once, with the verdicts of a one-machine run
  of the same selection, each case naming the array task that ran it; the merge job's exit code is the gate's;
- a planted crash: one task's workers abort (their cases become `error`, named with the task's job id) and
  the other task is killed outright (SIGKILL of its batch script: no results). The merge job names the missing
  shard and its array task and prints the sbatch command that reruns only it; the test runs that command,
  merges again, and the gate fails on the errors.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bench.results.store import load
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(
    os.environ.get("PEFT_BENCH_SLURM") != "1",
    reason="a real Slurm scheduler: set PEFT_BENCH_SLURM=1 (nox -s slurm installs and runs it)",
)

SELECTION = [REPO / "scenarios" / "toggles.toml", REPO / "scenarios" / "hotswap_peft.toml"]
ARRAY_SCRIPT = REPO / "examples" / "slurm" / "run_array.sbatch"
MERGE_SCRIPT = REPO / "examples" / "slurm" / "merge.sbatch"
DAEMONS = ("munged", "slurmctld", "slurmd")
JOB_TIMEOUT_S = float(os.environ.get("PEFT_BENCH_SLURM_TIMEOUT_S", "600"))
ENDED = (
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _slurm_conf(scratch: Path, ctl_port: int, node_port: int) -> str:
    cpus = os.cpu_count() or 1
    return f"""\
ClusterName=peftbench
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctl_port}
SlurmdPort={node_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={scratch}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={scratch}/state
SlurmdSpoolDir={scratch}/spool
SlurmctldPidFile={scratch}/run/slurmctld.pid
SlurmdPidFile={scratch}/run/slurmd.pid
SlurmctldLogFile={scratch}/log/slurmctld.log
SlurmdLogFile={scratch}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=3600
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    def __init__(self, scratch: Path, env: dict[str, str]):
        self.scratch = scratch
        self.env = env

    def cmd(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, check=True):
        return subprocess.run(
            list(args), cwd=cwd, env=env or self.env, capture_output=True, text=True, check=check, timeout=60
        )

    def sbatch(self, *args: str, cwd: Path, env: dict[str, str]) -> str:
        out = self.cmd("sbatch", "--parsable", *args, cwd=cwd, env=env).stdout.strip()
        return out.split(";")[0]

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        """Every record of a job (an array: one per task), as scontrol's key=value fields."""
        out = self.cmd("scontrol", "-o", "show", "job", job_id).stdout
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.strip()]

    def wait(self, job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout_s
        while True:
            records = self.jobs(job_id)
            # An array not yet split shows one pending record for all its tasks.
            if records and all(r.get("JobState") in ENDED for r in records):
                return records
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job {job_id} still not done after {timeout_s:.0f} s: {records}\n{self.logs()}"
                )
            time.sleep(1.0)

    def logs(self) -> str:
        parts = []
        for path in sorted(self.scratch.rglob("*.log")) + sorted(self.scratch.rglob("*.out")):
            parts.append(f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(parts)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
    for p in reversed(procs):
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster():
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing or os.geteuid() != 0:
        pytest.fail(
            f"PEFT_BENCH_SLURM=1 needs root and Debian's slurm-wlm and munge (missing: {missing or 'none'}, "
            f"uid {os.geteuid()}): run `nox -s slurm`, which installs them"
        )
    scratch = Path(tempfile.mkdtemp(prefix="peft-bench-slurm-"))
    procs: list[subprocess.Popen] = []
    cluster = None
    try:
        for sub in ("munge", "state", "spool", "run", "log", "work"):
            (scratch / sub).mkdir(mode=0o700)
        ctl_port, node_port = _free_ports(2)
        conf = scratch / "slurm.conf"
        conf.write_text(_slurm_conf(scratch, ctl_port, node_port))
        env = {**os.environ, "SLURM_CONF": str(conf)}
        env.pop("PEFT_BENCH_TEST_FAULT", None)
        key = scratch / "munge" / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
        key.chmod(0o400)
        log = open(scratch / "log" / "daemons.log", "ab")  # noqa: SIM115 (closed with the scratch folder)
        procs.append(
            subprocess.Popen(
                [
                    "munged", "--foreground", "--force",
                    f"--socket={scratch}/munge/munge.socket", f"--key-file={key}",
                    f"--pid-file={scratch}/run/munged.pid", f"--log-file={scratch}/log/munged.log",
                    f"--seed-file={scratch}/munge/munged.seed",
                ],
                stdout=log, stderr=log,
            )
        )  # fmt: skip
        _wait_for(lambda: (scratch / "munge" / "munge.socket").exists(), 20, "munged's socket", scratch)
        procs.append(
            subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(conf)], env=env, stdout=log, stderr=log)
        )
        procs.append(
            subprocess.Popen(
                ["slurmd", "-D", "-N", "localhost", "-f", str(conf)], env=env, stdout=log, stderr=log
            )
        )
        cluster = Cluster(scratch, env)

        def idle() -> bool:
            for p in procs:
                if p.poll() is not None:
                    raise AssertionError(f"{p.args[0]} exited with {p.returncode}\n{cluster.logs()}")
            r = cluster.cmd("sinfo", "-h", "-N", "-o", "%N %T", check=False)
            return r.returncode == 0 and "localhost idle" in r.stdout

        _wait_for(idle, 60, "the node to be idle in sinfo", scratch)
        yield cluster
    finally:
        if cluster is not None:
            subprocess.run(["scancel", "--full", "--partition=debug"], env=cluster.env, capture_output=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                q = subprocess.run(["squeue", "-h"], env=cluster.env, capture_output=True, text=True)
                if q.returncode != 0 or not q.stdout.strip():
                    break
                time.sleep(0.5)
        _stop(procs)
        shutil.rmtree(scratch, ignore_errors=True)


def _wait_for(ready, timeout_s: float, what: str, scratch: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            logs = "\n".join(
                p.read_text(errors="replace")[-3000:] for p in sorted((scratch / "log").glob("*"))
            )
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{logs}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def one_machine(cluster) -> dict[str, str]:
    """The same selection run on this machine without the scheduler: case id -> verdict."""
    out = cluster.scratch / "one-machine"
    env = {k: v for k, v in cluster.env.items() if not k.startswith(("SLURM", "PEFT_BENCH_TEST"))}
    env["PYTHONPATH"] = str(REPO)
    r = subprocess.run(
        [sys.executable, "-m", "bench", "run", *map(str, SELECTION), "--out", str(out), "-q"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S,
    )  # fmt: skip
    assert r.returncode in (0, 1), r.stdout + r.stderr
    return out


def _job_env(cluster: Cluster, out_root: Path, command: str, baseline: Path) -> dict[str, str]:
    return {
        **cluster.env,
        "PYTHONPATH": str(REPO),
        "PEFT_BENCH": command,
        "PEFT_BENCH_SELECTION": " ".join(map(str, SELECTION)),
        "PEFT_BENCH_OUT_ROOT": str(out_root),
        "PEFT_BENCH_BASELINE": str(baseline),
        # The gate's thresholds are tested elsewhere: here timings under two tasks on two cores are not the
        # one-machine run's, and only the verdicts must agree.
        "PEFT_BENCH_GATE_ARGS": "--latency-rel 1000 --memory-rel 1000",
    }


def _by_task(records: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {r["ArrayTaskId"]: r for r in records}


def test_array_then_merge_equals_one_machine_run(cluster, one_machine):
    work = cluster.scratch / "work" / "ok"
    work.mkdir()
    out_root = work / "reports"
    env = _job_env(cluster, out_root, f"{shlex.quote(sys.executable)} -m bench", one_machine / "results.json")
    array = cluster.sbatch("--array=0-1", str(ARRAY_SCRIPT), cwd=work, env=env)
    merge_job = cluster.sbatch(f"--dependency=afterany:{array}", str(MERGE_SCRIPT), cwd=work, env=env)

    tasks = _by_task(cluster.wait(array))
    merged_rec = cluster.wait(merge_job)[0]
    assert {t: r["JobState"] for t, r in tasks.items()} == {"0": "COMPLETED", "1": "COMPLETED"}, (
        cluster.logs()
    )
    assert merged_rec["JobState"] == "COMPLETED" and merged_rec["ExitCode"] == "0:0", cluster.logs()

    merged = load(out_root / "merged")
    ids = [c.case_id for c in merged.cases]
    expected = load(one_machine)
    assert sorted(ids) == sorted(c.case_id for c in expected.cases)
    assert len(ids) == len(set(ids))
    assert {c.case_id: c.verdict for c in merged.cases} == {c.case_id: c.verdict for c in expected.cases}
    for c in merged.cases:
        k = int(c.worker.shard.split("/")[0])
        assert c.worker.job == f"{array}_{k - 1}", c.worker
    for task in ("0", "1"):
        shard = load(out_root / f"shard-{task}")
        assert shard.scheduler["kind"] == "slurm" and shard.scheduler["job_id"] == f"{array}_{task}"
        assert shard.scheduler["script"] == str(ARRAY_SCRIPT)
    assert (out_root / "merged" / "report.md").exists()


FAULT_WRAPPER = """\
#!/bin/bash
# The planted failures: task 0's workers abort at their start (its cases become `error`); task 1's batch
# script is killed outright the first time (no results at all), and runs normally when rerun.
if [ "$SLURM_ARRAY_TASK_ID" = 0 ]; then export PEFT_BENCH_TEST_FAULT='*:abort@start'; fi
if [ "$SLURM_ARRAY_TASK_ID" = 1 ] && [ ! -e "{flag}" ]; then touch "{flag}"; kill -9 "$PPID"; exit 9; fi
exec {python} -m bench "$@"
"""


def test_crashed_and_lost_shards_are_named_and_rerun(cluster, one_machine):
    work = cluster.scratch / "work" / "faults"
    work.mkdir()
    out_root = work / "reports"
    wrapper = work / "peft-bench-with-faults"
    wrapper.write_text(FAULT_WRAPPER.format(flag=work / "killed-once", python=shlex.quote(sys.executable)))
    wrapper.chmod(0o755)
    env = _job_env(cluster, out_root, str(wrapper), one_machine / "results.json")
    array = cluster.sbatch("--array=0-1", str(ARRAY_SCRIPT), cwd=work, env=env)
    merge_job = cluster.sbatch(f"--dependency=afterany:{array}", str(MERGE_SCRIPT), cwd=work, env=env)

    tasks = _by_task(cluster.wait(array))
    first_merge = cluster.wait(merge_job)[0]
    assert tasks["0"]["JobState"] == "COMPLETED", cluster.logs()  # cases errored; the task wrote its results
    assert tasks["1"]["JobState"] != "COMPLETED", cluster.logs()  # killed
    assert not (out_root / "shard-1" / "results.json").exists()
    # The merge refuses (exit 2) and says what is missing, which array task it was, and how to rerun it.
    assert first_merge["ExitCode"] == "2:0", cluster.logs()
    log = (work / f"slurm-peft-bench-merge-{merge_job}.out").read_text()
    assert "missing shard(s) 2/2" in log and f"{array}_1" in log, log
    m = re.search(r"to rerun only them: (.+)", log)
    assert m, log
    rerun = m.group(1)
    assert "sbatch --array=1 " in rerun and str(ARRAY_SCRIPT) in rerun, rerun
    assert not (out_root / "merged" / "results.json").exists()

    # Run the printed command as the user would (from their shell: the same environment), then merge again.
    r = subprocess.run(["bash", "-c", rerun], env=env, capture_output=True, text=True, check=True, timeout=60)
    rerun_job = re.search(r"Submitted batch job (\d+)", r.stdout).group(1)
    second = cluster.sbatch(f"--dependency=afterany:{rerun_job}", str(MERGE_SCRIPT), cwd=work, env=env)
    assert _by_task(cluster.wait(rerun_job))["1"]["JobState"] == "COMPLETED", cluster.logs()
    second_merge = cluster.wait(second)[0]
    # The gate fails: shard 1's cases errored where the baseline's passed.
    assert second_merge["ExitCode"] == "1:0", cluster.logs()

    merged = load(out_root / "merged")
    expected = {c.case_id: c.verdict for c in load(one_machine).cases}
    assert sorted(c.case_id for c in merged.cases) == sorted(expected)
    for c in merged.cases:
        if c.worker.shard == "1/2":  # every case of the crashed task: error, naming its job
            assert c.verdict == "error" and c.worker.job == f"{array}_0", c
        else:  # the rerun task: the one-machine verdicts, its own job id
            assert c.verdict == expected[c.case_id] and c.worker.job == f"{rerun_job}_1", c
    log = (work / f"slurm-peft-bench-merge-{second}.out").read_text()
    assert f"shard 1/2 (job {array}_0):" in log and "error" in log, log
