"""Memory around a step: process RSS everywhere, CUDA allocator and NVML figures when there is a GPU.

Peak RSS is the kernel's VmHWM, reset at the start of each step by writing 5 to /proc/self/clear_refs
(Linux). ru_maxrss never resets, so it is not used for per-step peaks. Sampling happens at the step's
edges only, never inside a timed loop.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.results.measures import MemoryStats

_PROC = Path("/proc/self")


def rss_bytes() -> int | None:
    import psutil

    return psutil.Process().memory_info().rss


def reset_peak_rss() -> str | None:
    """Reset VmHWM to the current RSS. Returns why it could not, or None."""
    try:
        with open(_PROC / "clear_refs", "w") as f:
            f.write("5")
        return None
    except OSError as exc:
        return f"cannot reset the RSS high-water mark (/proc/self/clear_refs: {exc.strerror or exc})"


def peak_rss_bytes() -> int | None:
    try:
        for line in (_PROC / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cuda_unavailable_reason(device: str) -> str | None:
    if not device.startswith("cuda"):
        return f"no CUDA device (running on {device})"
    return None


def nvml_readings(device_index: int = 0) -> tuple[int | None, int | None, str | None]:
    """(process_used_bytes, device_used_bytes, reason_if_unavailable)."""
    try:
        import pynvml
    except ImportError:
        return None, None, "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound without a driver
        return None, None, f"NVML unavailable: {type(exc).__name__}"
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        device_used = int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        pid = os.getpid()
        process_used = None
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == pid and proc.usedGpuMemory is not None:
                process_used = int(proc.usedGpuMemory)
        reason = (
            None if process_used is not None else "NVML does not report this process (containers hide PIDs)"
        )
        return process_used, device_used, reason
    finally:
        pynvml.nvmlShutdown()


@dataclass
class _MemoryWindow:
    stats: MemoryStats | None = None
    _unavailable: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def measure_memory(device: str) -> Iterator[_MemoryWindow]:
    """Fills `.stats` on exit, also when the body raises."""
    window = _MemoryWindow()
    unavailable: dict[str, str] = {}
    reason = reset_peak_rss()
    if reason:
        unavailable["rss_peak_bytes"] = reason
    rss_before = rss_bytes()
    cuda_reason = cuda_unavailable_reason(device)
    cuda_before = None
    if cuda_reason is None:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    try:
        yield window
    finally:
        cuda = dict.fromkeys(("after", "peak", "reserved", "reserved_peak"))
        if cuda_reason is None:
            import torch

            torch.cuda.synchronize()
            cuda = {
                "after": torch.cuda.memory_allocated(),
                "peak": torch.cuda.max_memory_allocated(),
                "reserved": torch.cuda.memory_reserved(),
                "reserved_peak": torch.cuda.max_memory_reserved(),
            }
            nv_proc, nv_dev, nv_reason = nvml_readings(torch.cuda.current_device())
        else:
            for name in (
                "cuda_allocated_before_bytes",
                "cuda_allocated_after_bytes",
                "cuda_allocated_peak_bytes",
                "cuda_reserved_after_bytes",
                "cuda_reserved_peak_bytes",
            ):
                unavailable[name] = cuda_reason
            nv_proc = nv_dev = None
            nv_reason = cuda_reason
        if nv_proc is None:
            unavailable["nvml_process_used_bytes"] = nv_reason or "unavailable"
        if nv_dev is None:
            unavailable["nvml_device_used_bytes"] = nv_reason or "unavailable"
        peak = peak_rss_bytes() if "rss_peak_bytes" not in unavailable else None
        if peak is None and "rss_peak_bytes" not in unavailable:
            unavailable["rss_peak_bytes"] = "no VmHWM in /proc/self/status"
        window.stats = MemoryStats(
            rss_before_bytes=rss_before,
            rss_after_bytes=rss_bytes(),
            rss_peak_bytes=peak,
            cuda_allocated_before_bytes=cuda_before,
            cuda_allocated_after_bytes=cuda["after"],
            cuda_allocated_peak_bytes=cuda["peak"],
            cuda_reserved_after_bytes=cuda["reserved"],
            cuda_reserved_peak_bytes=cuda["reserved_peak"],
            nvml_process_used_bytes=nv_proc,
            nvml_device_used_bytes=nv_dev,
            unavailable=unavailable,
        )
