"""Micro-benchmarks of the adapter operations users care about, with pytest-benchmark's `pedantic` mode.

Each benchmark times one operation per round on a real tiny model, with untimed setup between rounds
(choosing the next adapter, restoring a state). Recompile counts, graph breaks and memory over all rounds
go into `benchmark.extra_info`, so `--benchmark-json` files carry them and `--benchmark-compare` shows the
timings as pytest-benchmark users expect. Correctness of these operations is the scenarios' job
(`peft-bench run`); here it is speed.
"""

from __future__ import annotations

import pytest

from benchmarks.conftest import ADAPTERS, alternate, probed, synced

A, B = (a.key for a in ADAPTERS)
HOTSWAP_PATHS = ("transformers", "peft")


def _swap_fn(model, path: str, device: str):
    """The hotswap call of each path, as bench.engine.subject makes it."""
    if path == "transformers":
        return lambda location: model.load_adapter(location, adapter_name="default", hotswap=True)
    from bench.engine.hotswap import peft_hotswap

    return lambda location: peft_hotswap(model, location, "default", device)


@pytest.mark.parametrize("path", HOTSWAP_PATHS)
def test_hotswap(benchmark, sources, fresh_model, rounds, path):
    """One hotswap of a rank-8 adapter into the `default` slot of an eager model, through each path."""
    model = fresh_model
    model.load_adapter(sources.adapter_locations[A], adapter_name="default")
    swap = synced(_swap_fn(model, path, sources.device), sources.device)
    setup = alternate([sources.adapter_locations[B], sources.adapter_locations[A]])
    with probed(benchmark, sources.device, hotswap_path=path, adapter_bytes=sources.adapter_bytes[B]):
        benchmark.pedantic(swap, setup=setup, rounds=rounds, warmup_rounds=1, iterations=1)


def test_set_adapter(benchmark, sources, fresh_model, rounds):
    """set_adapter between two loaded adapters (each round switches to the other)."""
    model = fresh_model
    model.load_adapter(sources.adapter_locations[A], adapter_name=A)
    model.load_adapter(sources.adapter_locations[B], adapter_name=B)
    switch = synced(model.set_adapter, sources.device)
    with probed(benchmark, sources.device):
        benchmark.pedantic(switch, setup=alternate([A, B]), rounds=rounds, warmup_rounds=1, iterations=1)


@pytest.mark.parametrize("op", ["disable_adapters", "enable_adapters"])
def test_toggle(benchmark, sources, fresh_model, rounds, op):
    """disable_adapters on an enabled model / enable_adapters on a disabled one; setup restores the state."""
    model = fresh_model
    model.load_adapter(sources.adapter_locations[A], adapter_name=A)
    undo = model.enable_adapters if op == "disable_adapters" else model.disable_adapters

    def setup():
        undo()
        return (), {}

    with probed(benchmark, sources.device, op=op):
        benchmark.pedantic(
            synced(getattr(model, op), sources.device),
            setup=setup,
            rounds=rounds,
            warmup_rounds=1,
            iterations=1,
        )


@pytest.mark.parametrize("path", HOTSWAP_PATHS)
def test_compiled_forward_after_swap(benchmark, sources, fresh_model, inputs, rounds, path):
    """A torch.compile'd (aot_eager) forward right after a hotswap: each round swaps (untimed), then times the
    first forward after it. A swap that invalidated the graph shows as recompiles in extra_info and as time."""
    import torch

    from bench.engine.probes.clock import Clock

    model = fresh_model
    if path == "transformers":
        model.enable_peft_hotswap(target_rank=8, check_compiled="error")
        model.load_adapter(sources.adapter_locations[A], adapter_name="default")
    else:
        from peft.utils.hotswap import prepare_model_for_compiled_hotswap

        model.load_adapter(sources.adapter_locations[A], adapter_name="default")
        prepare_model_for_compiled_hotswap(
            model, target_rank=8, config=model.peft_config, check_compiled="error"
        )
    model.requires_grad_(False)
    compiled = torch.compile(model, backend="aot_eager")
    kwargs = inputs.as_kwargs()
    compile_ms, _ = Clock.for_device(sources.device).time_ms(lambda: compiled(**kwargs))
    swap = _swap_fn(model, path, sources.device)
    locations = alternate([sources.adapter_locations[B], sources.adapter_locations[A]])

    def setup():
        (location,), _ = locations()
        swap(location)
        # transformers marks loaded adapter weights trainable; the harness resets it too, since dynamo guards on
        # requires_grad and would recompile for a flag an inference server never uses.
        model.requires_grad_(False)
        return (), {}

    forward = synced(lambda: compiled(**kwargs).logits, sources.device)
    with probed(benchmark, sources.device, hotswap_path=path, backend="aot_eager", first_call_ms=compile_ms):
        benchmark.pedantic(forward, setup=setup, rounds=rounds, warmup_rounds=1, iterations=1)


# A fresh (non-hotswap) load recompiles every time; more rounds than this only repeat the same compile.
RELOAD_MAX_ROUNDS = 5


def test_compiled_forward_after_plain_load(benchmark, sources, fresh_model, inputs, rounds):
    """What hotswapping saves: each round deletes the adapter and loads the other one without hotswap
    (untimed), then times the first compiled forward, which recompiles for the new LoRA modules. Also the
    control for the recompile counter: this benchmark must report recompiles, the hotswap ones none."""
    import torch

    model = fresh_model
    model.load_adapter(sources.adapter_locations[A], adapter_name="slot0")
    model.requires_grad_(False)
    compiled = torch.compile(model, backend="aot_eager")
    kwargs = inputs.as_kwargs()
    compiled(**kwargs)
    locations = alternate([sources.adapter_locations[B], sources.adapter_locations[A]])
    slot = {"n": 0}

    def setup():
        (location,), _ = locations()
        model.delete_adapter(f"slot{slot['n']}")
        slot["n"] += 1
        model.load_adapter(location, adapter_name=f"slot{slot['n']}")
        model.requires_grad_(False)
        return (), {}

    forward = synced(lambda: compiled(**kwargs).logits, sources.device)
    n = min(rounds, RELOAD_MAX_ROUNDS)
    with probed(benchmark, sources.device, backend="aot_eager", rounds_capped_at=RELOAD_MAX_ROUNDS):
        benchmark.pedantic(forward, setup=setup, rounds=n, warmup_rounds=0, iterations=1)
