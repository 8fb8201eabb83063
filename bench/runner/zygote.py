"""The preloaded worker (zygote): one process that has imported torch, transformers, peft (and bitsandbytes where
installed) and forks one fresh process per case, so a case no longer pays ~5 s of Python start and imports.

The zygote touches no model, no dynamo state and no device (torch.cuda stays uninitialised: a forked CUDA
context would be unusable). Each forked child gets what a spawned worker gets (bench.runner.run): its own session and
process group, the memory limit (RLIMIT_AS), death with its parent (PR_SET_PDEATHSIG; the zygote itself dies
with the run's process, so the chain holds), stdout and stderr into the case's log, the case's full environment
(TORCHINDUCTOR_CACHE_DIR among it) set before anything reads it, fresh Python/numpy/torch RNG seeds (as a
fresh process has), torch's thread count from that environment. Then it runs the spawned worker's own entry,
bench.worker.__main__.main([case_json, result_json]).

Protocol (JSON lines): the parent writes one request per case on the zygote's stdin; the zygote answers
{"pid": N} once forked and {"exit": returncode, "cpu_s": ...} when the child ends (wait4 gives its rusage).
Run as `python -m bench.runner.zygote`.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys
import traceback
from collections.abc import Iterator

PRELOAD = ("torch", "transformers", "peft", "bitsandbytes")
# bench modules the worker needs anyway; importing them touches no model (best effort: a broken one shows in
# the case, as it would in a spawned worker).
PRELOAD_BENCH = ("bench.worker.__main__", "bench.worker.execute")
DEFAULT_ENTRY = "bench.worker.__main__:main"
PR_SET_PDEATHSIG = 1
IMPORT_OUTPUT_LIMIT = 64 * 1024


def import_all(names: tuple[str, ...]) -> list[str]:
    import importlib
    import warnings

    loaded = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            try:
                importlib.import_module(name)
                loaded.append(name)
            except Exception:  # not installed, or broken: the case itself will say so
                continue
    return loaded


def preload() -> tuple[list[str], str | None]:
    """Import what the cases need. Returns (imported, where CUDA was initialised if an import did)."""
    # Every availability check in this process, the libraries' own at import included, goes through NVML
    # (torch reads this at each call): the CUDA runtime's device count, torch's default, would leave a later
    # fork's children unable to use CUDA.
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    loaded = import_all(("torch",))
    if "torch" not in loaded:
        return loaded + import_all(PRELOAD[1:] + PRELOAD_BENCH), None
    import torch

    with cuda_queries_through_nvml(torch.cuda) as first_init:
        loaded += import_all(PRELOAD[1:] + PRELOAD_BENCH)
    return loaded, first_init[0] if first_init else None


@contextlib.contextmanager
def cuda_queries_through_nvml(cuda, nvml_capability=None) -> Iterator[list[str]]:
    """While preloading: `cuda.get_device_capability` answers from NVML, and the first CUDA initialisation
    is recorded (the caller's stack, yielded as a one-item list) before it happens.

    bitsandbytes reads every device's compute capability when imported (peft imports it too), and torch's
    answer initialises CUDA, which no forked child could then use. NVML gives the same (major, minor)
    without it. Where NVML cannot answer, the real call runs: the zygote then reports what initialised CUDA
    and the run falls back to spawned workers (bench.runner.launch), slower but right."""
    nvml_capability = nvml_capability or _nvml_capability
    real_capability, real_init = cuda.get_device_capability, cuda._lazy_init
    first_init: list[str] = []

    def capability(device=None):
        answer = nvml_capability(device)
        return answer if answer is not None else real_capability(device)

    def lazy_init():
        if not first_init and not cuda.is_initialized():
            first_init.append("".join(traceback.format_stack(limit=12)[:-1]))
        return real_init()

    cuda.get_device_capability, cuda._lazy_init = capability, lazy_init
    try:
        yield first_init
    finally:
        cuda.get_device_capability, cuda._lazy_init = real_capability, real_init


def _nvml_capability(device) -> tuple[int, int] | None:
    """(major, minor) of a CUDA device by NVML, or None where that cannot be said without CUDA."""
    index = getattr(device, "idx", device)  # torch.cuda.device(i) objects, as bitsandbytes passes them
    if index is None:
        index = 0
    elif not isinstance(index, int):
        return None  # a torch.device or a string: left to torch
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if not all(v.isdigit() for v in ids) or index >= len(ids):
            return None  # UUIDs or MIG names: torch maps them
        index = int(ids[index])
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        return int(major), int(minor)
    except Exception:
        return None
    finally:
        pynvml.nvmlShutdown()


def cuda_initialized() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


# Every message to the parent starts with this mark: code that runs at interpreter start-up (a
# sitecustomize.py) may print to the same pipe before serve() takes it over, and the parent skips such lines.
MESSAGE_MARK = "\x1epeft-bench-zygote "


def _send(fd: int, message: dict) -> None:
    data = (MESSAGE_MARK + json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(fd, data) :]


def _lines(fd: int):
    buf = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield json.loads(line)


def serve() -> int:
    # The protocol gets private descriptors; 0 and 1 become /dev/null and stderr, so that nothing an import
    # prints can corrupt it, and a forked child starts with plain 0/1/2.
    req_fd, resp_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    with captured_output() as imports_said:  # into each case's log, not the run's terminal (issue 32)
        loaded, initialised_at = preload()
    if cuda_initialized():  # every forked child would inherit a CUDA context it cannot use
        where = f", first by:\n{initialised_at}" if initialised_at else ""
        _send(resp_fd, {"error": f"torch.cuda was initialised while preloading{where}"})
        return 1
    ready = {"ready": True, "pid": os.getpid(), "preloaded": loaded, "cuda_initialized": False}
    _send(resp_fd, {**ready, "import_output": imports_said[0]})
    for request in _lines(req_fd):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, (req_fd, resp_fd))  # never returns
        _send(resp_fd, {"pid": pid})
        _, status, usage = os.wait4(pid, 0)
        _send(
            resp_fd,
            {"exit": os.waitstatus_to_exitcode(status), "cpu_s": usage.ru_utime + usage.ru_stime},
        )
    return 0


@contextlib.contextmanager
def captured_output() -> Iterator[list[str]]:
    """What is written to fds 1 and 2 inside (a library's import-time warning, such as bitsandbytes' "Failed
    to load CPU gemm_4bit_forward from kernels-community"), kept instead: yielded as a one-item list filled on
    the way out with its last IMPORT_OUTPUT_LIMIT bytes. A spawned worker prints it into the case's log; the
    parent writes it there for a forked one (bench.runner.launch)."""
    import tempfile

    said = [""]
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            yield said
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            size = tmp.seek(0, os.SEEK_END)
            tmp.seek(max(0, size - IMPORT_OUTPUT_LIMIT))
            said[0] = tmp.read().decode("utf-8", "replace")


def _child(request: dict, private_fds: tuple[int, ...]) -> None:
    code = 1
    try:
        zygote = os.getppid()
        os.setsid()  # its own session and process group: the parent kills the whole group
        for fd in private_fds:
            os.close(fd)
        limit = request.get("memory_limit_bytes")
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != zygote:  # the zygote died before prctl took effect
                os._exit(1)
        # O_NOFOLLOW: the parent opened the log the same way; a link swapped in since is refused here too.
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        start_clean(os.environ)
        module, _, func = request.get("entry", DEFAULT_ENTRY).partition(":")
        import importlib

        entry = getattr(importlib.import_module(module), func)
        sys.argv = [module, *request["argv"]]
        code = entry(list(request["argv"])) or 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def start_clean(env) -> None:
    """What a fresh interpreter would have that a forked one shares with its siblings."""
    import random

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    random.seed()  # a spawned process seeds from os.urandom; forked siblings would share one sequence
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.seed()  # a fresh process gets a nondeterministic default seed; siblings must not share one
        threads = env.get("OMP_NUM_THREADS")
        if threads and threads.isdigit() and int(threads) > 0:
            torch.set_num_threads(int(threads))


if __name__ == "__main__":
    # Ctrl-C is the run's to handle (it kills its workers); a SIGINT sent to this process ends it at once and
    # quietly, with no KeyboardInterrupt traceback in the run's terminal (issue 32). Forked cases get
    # Python's own handler back (start_clean).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    code = serve()
    sys.stdout.flush()
    sys.stderr.flush()
    # Nothing of the zygote's needs finalising (each case is its own process, and exits the same way):
    # tearing down an interpreter that imported torch, transformers and peft takes over a second, and the
    # run's process waits for it at exit.
    os._exit(code)
