"""torch's global random generator, kept away from a case's seeded figures.

Most draws in a case come from generators of their own (workload inputs, train batches, serve prompts and
streams, a generated adapter's A and B). Two cannot take one, because the library draws them: LoRA's own
init of A when `add_adapter` builds the layers, and dropout in a train step's forward passes. Anything else
that draws from the global generator before them (building a model or adapter on a cache miss, peft's
throwaway init inside a reference's `load_adapter`) would move what they get, so a case's train losses
depended on whether the cache was warm. Two rules, each enough on its own for those two consumers:
a consumer reseeds right before it draws (`seeded`), and a build runs on a private copy (`isolated`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def _cuda_devices(device: str) -> list[int]:
    """The CUDA device whose generator a case on `device` uses (none on CPU)."""
    import torch

    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return []
    index = torch.device(device).index
    return [torch.cuda.current_device() if index is None else index]


@contextlib.contextmanager
def isolated(device: str = "cpu") -> Iterator[None]:
    """The body runs on a copy of the global generator state (CPU, and `device`'s if it is a CUDA one):
    whatever it draws, the state afterwards is the state before."""
    import torch

    with torch.random.fork_rng(devices=_cuda_devices(device)):
        yield


@contextlib.contextmanager
def seeded(seed: int, device: str = "cpu") -> Iterator[None]:
    """The body draws from the global generator seeded with `seed` (torch.manual_seed: CPU and CUDA), so
    what it gets depends on the seed alone; the state outside is left as it was."""
    import torch

    with isolated(device):
        torch.manual_seed(seed)
        yield
