"""Starting and watching one worker process: spawned (a fresh `python -m bench.worker`) or forked from the
preloaded worker (bench.runner.zygote). Both give a handle with the same three operations: wait, kill the group, and
the child's CPU time.

Waiting never goes through subprocess.Popen.wait: a Ctrl-C landing inside its internal lock handling can
leave the lock taken, and the wait after killing the worker then blocks forever (the flaky interrupt test of
issue 13). A pidfd (or a short poll) and os.wait4 have no lock to lose.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.runner.zygote import MESSAGE_MARK

WORKER_METHODS = ("fork", "spawn")
ZYGOTE_READY_TIMEOUT_S = 600.0  # importing torch and friends on a loaded 2-core machine
# After SIGKILL to a case's worker, how long its exit may take to be reported. A killed process goes at once; a
# preloaded worker that does not report it (stopped by SIGSTOP, hung) is killed in turn (ForkedWorker.abandon).
REAP_WAIT_S = 10.0
# Environment variables read when torch and the libraries are imported, so a zygote started under other values
# cannot serve a case: changing one starts a new zygote.
IMPORT_TIME_ENV_PREFIXES = (
    "OMP_",
    "MKL_",
    "TORCH",
    "PYTORCH",
    "CUDA",
    "HF_",
    "TRANSFORMERS",
    "PYTHON",
    "BNB",
)


def fork_available() -> bool:
    return hasattr(os, "fork") and sys.platform.startswith("linux")


def default_method() -> str:
    return "fork" if fork_available() else "spawn"


class WorkerGone(RuntimeError):
    """The preloaded worker died or said something it should not: the case cannot be watched."""


@dataclass
class Exit:
    returncode: int
    cpu_s: float


class SpawnedWorker:
    def __init__(self, argv: list[str], log, env: dict, preexec_fn):
        self._proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the parent only; it decides, and kills the group
            preexec_fn=preexec_fn,
        )
        self.pid = self._proc.pid
        self._exit: Exit | None = None
        self._killed = False
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._pidfd = None

    def wait(self, timeout: float | None) -> Exit | None:
        """The exit, or None once `timeout` seconds passed with the worker still running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._exit is None:
            try:
                pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped already: an interrupt landed between wait4 and the line below
                self._exit = Exit(-signal.SIGKILL if self._killed else 255, 0.0)
                self._proc.returncode = self._exit.returncode
                self._close()
                break
            if pid:
                self._exit = Exit(os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime)
                self._proc.returncode = self._exit.returncode  # so Popen never waits for it again
                self._close()
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            step = 0.5 if left is None else min(0.5, left)
            if self._pidfd is not None:
                select.select([self._pidfd], [], [], step)
            else:
                time.sleep(min(step, 0.05))
        return self._exit

    def poll(self) -> bool:
        return self.wait(0) is not None

    def kill_group(self) -> None:
        if self._exit is not None:
            return
        self._killed = True
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def settle(self, timeout_s: float = 30.0) -> None:
        """After kill_group, on the way out of an interruption: reap the worker, never for ever."""
        self.wait(timeout_s)

    def abandon(self) -> Exit:
        """After kill_group and REAP_WAIT_S with no exit (a process the kernel cannot kill at once): given
        up on, as killed."""
        self._killed = True
        return Exit(-signal.SIGKILL, 0.0)

    def _close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


_MARK = MESSAGE_MARK.encode()


class Zygote:
    """The parent's side of one preloaded worker process (bench.runner.zygote)."""

    def __init__(self, env: dict, preexec_fn=None, stderr=None, *, wait_ready: bool = True):
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.runner.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches the run's process only
            preexec_fn=preexec_fn,
        )
        self._buf = b""
        self.startup_output = ""
        self.busy = False
        if wait_ready:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Until the zygote has imported everything (separate from the start, so several start at once)."""
        hello = self._read(ZYGOTE_READY_TIMEOUT_S)
        if hello is None or not hello.get("ready"):
            self.close()
            raise WorkerGone(f"the preloaded worker did not start: {hello}")
        self.pid = hello["pid"]
        self.preloaded = tuple(hello["preloaded"])
        self.cuda_initialized = hello["cuda_initialized"]
        # What the imports printed (bench.runner.zygote.captured_output): written into each forked case's log.
        self.import_output = self.startup_output + str(hello.get("import_output") or "")

    def alive(self) -> bool:
        return self._proc.poll() is None

    def _read(self, timeout: float | None) -> dict | None:
        """The next message, None after `timeout` s; WorkerGone if the zygote is gone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = None if deadline is None else deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], 0.5 if left is None else max(0.0, min(0.5, left)))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise WorkerGone("the preloaded worker exited")
                self._buf += chunk
            elif left is not None and left <= 0:
                return None
        line, self._buf = self._buf.split(b"\n", 1)
        if not line.startswith(_MARK):
            # Printed by start-up code (a sitecustomize.py), not a message: kept for the cases' logs.
            self.startup_output += line.decode(errors="replace") + "\n"
            return self._read(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return json.loads(line[len(_MARK) :])

    def fork(self, argv: list[str], *, log: Path, env: dict, memory_limit_bytes: int | None, entry=None):
        if self.busy:
            raise WorkerGone("the preloaded worker is already running a case")
        request = {"argv": argv, "log": str(log), "env": env, "cwd": os.getcwd()}
        request["memory_limit_bytes"] = memory_limit_bytes
        if entry:
            request["entry"] = entry
        try:
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerGone(f"the preloaded worker exited: {exc}") from None
        self.busy = True
        reply = self._read(60.0)
        if reply is None or "pid" not in reply:
            raise WorkerGone(f"the preloaded worker did not fork: {reply}")
        return ForkedWorker(self, reply["pid"])

    def kill(self) -> None:
        """SIGKILL to the zygote (a stopped one too): it serves no more cases, and a later one starts anew.
        Its forked cases die with it (PR_SET_PDEATHSIG)."""
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.close()

    def close(self) -> None:
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc.stdout.close()


class ForkedWorker:
    def __init__(self, zygote: Zygote, pid: int):
        self._zygote, self.pid, self._exit = zygote, pid, None

    def wait(self, timeout: float | None) -> Exit | None:
        if self._exit is None:
            reply = self._zygote._read(timeout)
            if reply is None:
                return None
            if "exit" not in reply:
                raise WorkerGone(f"unexpected message from the preloaded worker: {reply}")
            self._exit = Exit(reply["exit"], reply["cpu_s"])
            self._zygote.busy = False
        return self._exit

    def poll(self) -> bool:
        return self.wait(0) is not None

    def settle(self, timeout_s: float = 30.0) -> None:
        """After kill_group, on the way out of an interruption: read the exit the zygote reports, never for
        ever. If an interrupt lost that message the zygote stays `busy` and the next run starts a new one."""
        deadline = time.monotonic() + timeout_s
        gone_since = None
        while time.monotonic() < deadline and self.wait(0.2) is None:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:  # reaped by the zygote; its message should follow at once
                gone_since = gone_since or time.monotonic()
                if time.monotonic() - gone_since > 1.0:
                    return
            except PermissionError:
                return

    def abandon(self) -> Exit:
        """After kill_group and REAP_WAIT_S with no exit reported: the zygote is stopped (SIGSTOP) or hung, and
        would keep the run waiting for ever (issue 32). It is killed; the case counts as killed."""
        self._zygote.kill()
        self._exit = Exit(-signal.SIGKILL, 0.0)
        return self._exit

    def kill_group(self) -> None:
        if self._exit is not None:
            return
        for kill in (os.killpg, os.kill):
            try:
                kill(self.pid, signal.SIGKILL)
                return
            except (ProcessLookupError, PermissionError):
                continue


def _import_env_key(env: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith(IMPORT_TIME_ENV_PREFIXES)))


class _Shared:
    """One zygote per interpreter and import-time environment, started on first use and reused by every run
    and by the pytest plugin in this process (the imports are the cost it saves). Started from the thread that
    first needs it: PR_SET_PDEATHSIG follows that thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._zygotes: dict[tuple, Zygote] = {}
        atexit.register(self.close_all)

    def get_many(self, specs: list[tuple[dict, Callable | None, object]]) -> list[Zygote]:
        """The zygote of each (env, preexec_fn, key), the missing ones importing side by side. `key` tells
        apart zygotes of one environment that differ in what preexec_fn sets (the cores of one job under
        --jobs): each serves one case at a time."""
        with self._lock:
            out, starting = [], []
            for env, preexec_fn, key in specs:
                full_key = (_import_env_key(env), key)
                z = self._zygotes.get(full_key)
                if z is not None and (not z.alive() or z.busy):
                    self._zygotes.pop(full_key)
                    if z.alive():
                        z.close()
                    z = None
                if z is None:
                    z = Zygote(env, preexec_fn, wait_ready=False)
                    starting.append((full_key, z))
                out.append(z)
            for n, (full_key, z) in enumerate(starting):
                try:
                    z.wait_ready()  # one that fails to start closes itself and is not kept ...
                except BaseException:
                    for _, later in starting[n + 1 :]:  # ... nor are the ones still starting after it
                        later.close()
                    raise
                self._zygotes[full_key] = z
            return out

    def close_all(self) -> None:
        with self._lock:
            for z in self._zygotes.values():
                try:
                    z.close()
                except Exception:
                    pass
            self._zygotes.clear()


shared_zygotes = _Shared()
