"""A worker entry for tests/runner/test_zygote.py: reports the state a worker process starts in (as JSON into
argv[1]). With argv[2] == "pollute" it first does what a case does to a process (compiles, draws random
numbers, changes the thread count), so the test can show its checks see such a process as not clean."""

from __future__ import annotations

import ctypes
import json
import os
import random
import resource
import sys
from pathlib import Path


def state() -> dict:
    import torch
    import torch._dynamo.utils

    pdeathsig = ctypes.c_int(0)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(2, ctypes.byref(pdeathsig))  # PR_GET_PDEATHSIG
    return {
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "sid": os.getsid(0),
        "pdeathsig": pdeathsig.value,
        "rlimit_as": resource.getrlimit(resource.RLIMIT_AS)[0],
        "inductor_cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
        "dynamo_counters": {k: dict(v) for k, v in torch._dynamo.utils.counters.items() if v},
        "cuda_initialized": torch.cuda.is_initialized(),
        "torch_initial_seed": torch.initial_seed(),
        # No draw since the seed was set: the first number is the seed's first number.
        "torch_rng_untouched": torch.rand(1).item()
        == torch.rand(1, generator=torch.Generator().manual_seed(torch.initial_seed())).item(),
        "torch_threads": torch.get_num_threads(),
        "python_random": random.random(),
        "cwd": os.getcwd(),
    }


def pollute() -> None:
    import torch

    torch.compile(lambda x: x * 2 + 1, backend="eager")(torch.ones(3))
    torch.manual_seed(1234)
    torch.rand(5)
    torch.set_num_threads(max(2, torch.get_num_threads() + 1))


def main(argv: list[str]) -> int:
    if argv[2:] == ["pollute"]:
        pollute()
    Path(argv[1]).write_text(json.dumps(state()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
