"""The preloaded worker (bench.runner.zygote): a forked case starts as clean as a spawned one (dynamo counters, RNG,
torch threads, no CUDA context), with the isolation a spawned worker has (own session and process group,
memory limit, death with its parent, its own TORCHINDUCTOR_CACHE_DIR); a case that dirtied its process leaves
the next forked case clean."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types

import pytest

from bench.runner import zygote as zygote_mod
from bench.runner.launch import child_env
from bench.runner.processes import Zygote
from tests.conftest import REPO
from tests.runner.test_interrupt_resume import _scenario

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

PROBE = "tests.zygote_probe:main"
LIMIT = 6 * 2**30


def _env(tmp_path, name: str) -> dict:
    env = child_env(tmp_path / f"inductor-{name}")
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env['PYTHONPATH']}"
    return env


def assert_clean(state: dict, spawned: dict) -> None:
    """What a fresh process has; `spawned` is a real spawned worker's state, under the same environment."""
    assert state["dynamo_counters"] == {}, state["dynamo_counters"]
    assert state["cuda_initialized"] is False
    assert state["torch_rng_untouched"] is spawned["torch_rng_untouched"] is True
    assert state["torch_threads"] == spawned["torch_threads"]


@pytest.fixture(scope="module")
def zyg(tmp_path_factory):
    z = Zygote(_env(tmp_path_factory.mktemp("z"), "zygote"))
    yield z
    z.close()


def _forked(z: Zygote, tmp_path, name: str, *extra: str) -> dict:
    out, log = tmp_path / f"{name}.json", tmp_path / f"{name}.log"
    handle = z.fork(
        [str(tmp_path / "unused"), str(out), *extra],
        log=log,
        env=_env(tmp_path, name),
        memory_limit_bytes=LIMIT,
        entry=PROBE,
    )
    exit_ = handle.wait(120)
    assert exit_ is not None and exit_.returncode == 0, log.read_text()
    return json.loads(out.read_text())


def _spawned(tmp_path, name: str, *extra: str) -> dict:
    out = tmp_path / f"{name}.json"
    subprocess.run(
        [sys.executable, "-m", "tests.zygote_probe", "unused", str(out), *extra],
        check=True,
        env=_env(tmp_path, name),
        cwd=REPO,
        timeout=300,
    )
    return json.loads(out.read_text())


def test_zygote_preloaded_the_libraries_and_touched_no_device(zyg):
    assert {"torch", "transformers", "peft"} <= set(zyg.preloaded)
    assert zyg.cuda_initialized is False


def test_forked_case_starts_clean_and_isolated(zyg, tmp_path):
    spawned = _spawned(tmp_path, "spawned")
    first = _forked(zyg, tmp_path, "first", "pollute")  # dirties its own process only
    with pytest.raises(AssertionError):  # negative control: the check sees a dirtied process
        assert_clean(first, spawned)
    second = _forked(zyg, tmp_path, "second")
    assert_clean(second, spawned)
    third = _forked(zyg, tmp_path, "third")
    # Reseeded per child from the OS, as a spawned process is: siblings share no sequence.
    assert second["python_random"] != third["python_random"]
    assert second["torch_initial_seed"] != third["torch_initial_seed"]
    for st, name in ((second, "second"), (third, "third")):
        assert st["pid"] != zyg.pid
        assert st["pgid"] == st["pid"] == st["sid"]  # its own session and group: killpg kills it all
        assert st["pdeathsig"] == signal.SIGKILL
        assert st["rlimit_as"] == LIMIT
        assert st["inductor_cache_dir"] == str(tmp_path / f"inductor-{name}")
        assert st["cwd"] == os.getcwd()


def test_a_killed_forked_case_is_reported_and_the_zygote_serves_on(zyg, tmp_path):
    log = tmp_path / "hang.log"
    handle = zyg.fork(
        ["-c", "x"], log=log, env=_env(tmp_path, "hang"), memory_limit_bytes=None, entry="time:sleep"
    )  # time.sleep(["-c", "x"]) raises TypeError -> exit 1
    exit_ = handle.wait(60)
    assert exit_.returncode == 1 and "TypeError" in log.read_text()
    handle = zyg.fork(
        ["unused", str(tmp_path / "x.json")],
        log=log,
        env=_env(tmp_path, "k"),
        memory_limit_bytes=None,
        entry="tests.runner.test_zygote:_sleep_forever",
    )
    assert handle.wait(1.0) is None  # still running
    handle.kill_group()
    assert handle.wait(30).returncode == -signal.SIGKILL
    assert _forked(zyg, tmp_path, "after")["dynamo_counters"] == {}


def _sleep_forever(argv):
    import time

    while True:
        time.sleep(1)


def test_zygote_refuses_to_serve_with_cuda_initialised(monkeypatch):
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(is_initialized=lambda: True))
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert zygote_mod.cuda_initialized() is True
    fake.cuda.is_initialized = lambda: False
    assert zygote_mod.cuda_initialized() is False


class _FakeCuda:
    """torch.cuda as far as the preload touches it: get_device_capability initialises CUDA (as torch's does,
    through the module's _lazy_init)."""

    def __init__(self):
        self.initialised = False

    def is_initialized(self):
        return self.initialised

    def _lazy_init(self):
        self.initialised = True

    def get_device_capability(self, device=None):
        self._lazy_init()
        return (9, 0)


def _bitsandbytes_import(cuda):
    return max(cuda.get_device_capability(types.SimpleNamespace(idx=i)) for i in range(2))


def test_while_preloading_the_compute_capability_comes_from_nvml_and_cuda_stays_uninitialised():
    """bitsandbytes reads each device's compute capability when imported (peft imports it too); torch's
    answer initialises CUDA, which a forked case could then not use. During the preload NVML answers."""
    cuda = _FakeCuda()
    real = cuda.get_device_capability
    asked = []

    def nvml(device):
        asked.append(device.idx)
        return (9, 0)

    with zygote_mod.cuda_queries_through_nvml(cuda, nvml) as first_init:
        assert _bitsandbytes_import(cuda) == (9, 0)
    assert asked == [0, 1] and cuda.initialised is False and first_init == []
    assert cuda.get_device_capability == real and cuda._lazy_init.__name__ == "_lazy_init"  # restored
    # Control: where NVML cannot answer, torch's call runs and initialises CUDA, and the preload records
    # who did it, for the zygote's error (the run then falls back to spawned workers).
    with zygote_mod.cuda_queries_through_nvml(cuda, lambda device: None) as first_init:
        _bitsandbytes_import(cuda)
    assert cuda.initialised is True
    assert len(first_init) == 1 and "_bitsandbytes_import" in first_init[0]


def test_nvml_capability_maps_visible_devices_and_declines_what_it_cannot_map(monkeypatch):
    handles = []
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: handles.append(i) or i,
        nvmlDeviceGetCudaComputeCapability=lambda h: (8, h),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert zygote_mod._nvml_capability(types.SimpleNamespace(idx=1)) == (8, 1)
    assert zygote_mod._nvml_capability(None) == (8, 3) and handles == [1, 3]
    assert zygote_mod._nvml_capability(2) is None  # not visible: torch says so
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8c2f1e4a")
    assert zygote_mod._nvml_capability(0) is None  # UUIDs: torch maps them
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert zygote_mod._nvml_capability("cuda:0") is None
    fake.nvmlInit = lambda: (_ for _ in ()).throw(RuntimeError("NVMLError_LibraryNotFound"))
    assert zygote_mod._nvml_capability(0) is None  # no driver


def test_preload_asks_for_devices_through_nvml(monkeypatch):
    monkeypatch.delenv("PYTORCH_NVML_BASED_CUDA_CHECK", raising=False)
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "0")  # restored after the test
    loaded, initialised_at = zygote_mod.preload()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"
    assert {"torch", "transformers", "peft"} <= set(loaded) and initialised_at is None


class _Storm(BaseException):
    pass


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_interrupts_landing_anywhere_in_wait_never_wedge_it(method, zyg, tmp_path):
    """Issue 13's flaky interrupt test: a signal landing inside subprocess.Popen.wait's lock handling left its
    lock taken, and the wait after killing the worker blocked for ever. Here an interrupt lands at a random
    point of every wait, thousands of times; then the worker is killed and must be reaped at once.
    (The same storm against Popen.wait(timeout=...) leaves `_waitpid_lock` held in about half the trials.)"""
    from bench.runner.processes import SpawnedWorker

    log = tmp_path / "w.log"
    if method == "spawn":
        handle = SpawnedWorker(
            [sys.executable, "-c", "import time; time.sleep(120)"],
            subprocess.DEVNULL,
            _env(tmp_path, "w"),
            None,
        )
    else:
        handle = zyg.fork(
            [],
            log=log,
            env=_env(tmp_path, "w"),
            memory_limit_bytes=None,
            entry="tests.runner.test_zygote:_sleep_forever",
        )
    armed = [False]

    def storm(signum, frame):
        if armed[0]:
            armed[0] = False
            raise _Storm()

    old = signal.signal(signal.SIGALRM, storm)
    signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
    interrupts, end = 0, time.monotonic() + 1.5
    try:
        while time.monotonic() < end:
            try:
                armed[0] = True
                assert handle.wait(0.01) is None
            except _Storm:
                interrupts += 1
            finally:
                armed[0] = False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert interrupts > 50
    handle.kill_group()
    started = time.monotonic()
    handle.settle(20)
    assert time.monotonic() - started < 10
    if method == "spawn":
        assert handle.wait(0) is not None


def test_the_environment_block_comes_from_a_fork_of_the_zygote_and_equals_one_collected_here(tmp_path):
    from bench.results.environment import collect
    from bench.runner.launch import shared_zygote
    from bench.runner.run import environment_via
    from bench.spec.codec import to_dict

    via = environment_via(shared_zygote(), tmp_path)
    assert via is not None
    assert to_dict(via) == to_dict(collect())
    assert list(tmp_path.iterdir()) == []  # its temporary folder is gone


def test_control_a_failing_environment_fork_gives_none_and_the_run_collects_it_itself(tmp_path, monkeypatch):
    import bench.runner.run
    from bench.runner.launch import shared_zygote

    monkeypatch.setattr(bench.runner.run, "ENVIRONMENT_ENTRY", "bench.results.environment:no_such_entry")
    assert bench.runner.run.environment_via(shared_zygote(), tmp_path) is None


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_forked_run_never_imports_torch_in_the_parent(tmp_path, cache_root, method):
    # The parent only waits; with the zygote's fork telling the environment, it never pays torch's import.
    # Spawned workers are the control: there the parent collects the environment itself, importing torch.
    scenario = tmp_path / "s.toml"
    scenario.write_text(_scenario("eager"))
    code = (
        "import sys; from bench.cli.main import main; "
        f"rc = main(['run', {str(scenario)!r}, '--out', {str(tmp_path / 'out')!r}, '-q', '--worker', {method!r}]); "
        "print('TORCH', 'torch' in sys.modules); sys.exit(rc)"
    )
    env = {**os.environ, "PEFT_BENCH_CACHE": str(cache_root), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"TORCH {method == 'spawn'}" in proc.stdout
    assert json.loads((tmp_path / "out" / "results.json").read_text())["environment"]["libraries"]["torch"]


def test_startup_code_that_prints_to_stdout_does_not_break_the_protocol(tmp_path):
    """A sitecustomize.py (any code Python runs at start-up) that prints to stdout: the preloaded worker's
    messages share that pipe, so the parent read the print as a message (JSONDecodeError, a run with no
    results.json). Its messages now carry a mark; other lines are kept as what start-up printed."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text('print("hello from sitecustomize")\nprint("{not json")\n')
    env = _env(tmp_path, "site")
    env["PYTHONPATH"] = f"{site}{os.pathsep}{env['PYTHONPATH']}"
    z = Zygote(env)
    try:
        assert z.pid > 0 and "hello from sitecustomize" in z.import_output
        state = _forked(z, tmp_path, "after-site")
        assert state["cuda_initialized"] is False  # it serves cases as usual
    finally:
        z.close()
