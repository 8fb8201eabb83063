"""One base model for many adapter states: apply a state's edits, run, then undo them exactly.

The math oracle (math_oracle.py) once built a fresh model per adapter state (from_pretrained, merge, cast): on a
serve step with 8 adapters, 8 loads of the same base. Here the base is loaded once and each state is applied
to it and taken off again. The result must be bit for bit what a fresh model per state gives, so the undo is a
copy, never arithmetic: (W + d) - d is not W in floating point. Every tensor a state changes in place is
copied before the change (Edits.keep) and copied back after the run (copy_ within one dtype is bitwise); a
replaced parameter (a modules_to_save copy) gets its original object back (Edits.replace); a hook is removed
(Edits.hook). Only the touched tensors are copied, each once per base (SharedBase.originals: every state
starts from the same loaded values), and copied back after each state.

The undo is also verified, so that an edit made without Edits (a new method's merge that forgot `keep`) can
cost a load but never a wrong result: after each undo, every parameter and buffer must be the same object with
the same bits (an exact integer sum of its raw bits) and every module the same hooks as when the base was
loaded. Where not, the base is dropped (`SharedBase.misses`) and the next state loads a new one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.spec.precision import repacks_on_first_forward


class Edits:
    """What one state did to a model, recorded before it was done. `record=False` (a model built for one
    state and then dropped) applies the same edits without keeping anything. `originals`: id(tensor) ->
    (tensor, a copy of its value before any edit), shared by the states of one base."""

    def __init__(self, record: bool = True, originals: dict[int, tuple[Any, Any]] | None = None) -> None:
        self.record = record
        self._originals = {} if originals is None else originals
        self._kept: dict[int, Any] = {}  # the tensors this state changed in place
        self._replaced: list[tuple[Any, str, Any]] = []  # (module, attribute, the original value)
        self._hooks: list[Any] = []

    def keep(self, tensor):
        """Call before changing `tensor` in place; returns it."""
        if self.record:
            if id(tensor) not in self._originals:
                self._originals[id(tensor)] = (tensor, tensor.detach().clone())
            self._kept[id(tensor)] = tensor
        return tensor

    def replace(self, module, name: str, value) -> None:
        """setattr(module, name, value), the original value kept to be put back."""
        if self.record:
            self._replaced.append((module, name, getattr(module, name)))
        setattr(module, name, value)

    def hook(self, handle) -> None:
        """A hook handle (register_forward_hook / _pre_hook) to remove on undo."""
        self._hooks.append(handle)

    def undo(self) -> None:
        import torch

        with torch.no_grad():
            for handle in reversed(self._hooks):
                handle.remove()
            for module, name, original in reversed(self._replaced):
                setattr(module, name, original)
            for key, tensor in self._kept.items():
                tensor.copy_(self._originals[key][1])
        self._hooks, self._replaced, self._kept = [], [], {}


def _bits(tensor) -> int:
    """An exact checksum of a tensor's raw bits: the wrapping sum of its bytes read as 64-bit integers, the
    remainder byte by byte (any single changed element changes it). 64-bit words: a sum of int32 words
    accumulated in int64 took 24x longer on CPU."""
    import torch

    raw = tensor.detach().reshape(-1).view(torch.uint8)
    if raw.storage_offset() % 8:
        raw = raw.clone()  # a fresh, aligned allocation: an int64 view needs one
    words = raw.numel() // 8 * 8
    return int(raw[:words].view(torch.int64).sum()) + int(raw[words:].sum())


def fingerprint(model) -> dict[str, tuple]:
    """Per parameter and buffer name (tied ones under each name): its object, dtype, shape and bits; per
    module: the keys of its forward hooks and pre-hooks."""
    out: dict[str, tuple] = {}
    tensors = [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]
    for name, t in tensors:
        out[name] = (id(t), t.dtype, tuple(t.shape), _bits(t))
    for name, module in model.named_modules(remove_duplicate=False):
        out[f"{name} hooks"] = (tuple(module._forward_hooks), tuple(module._forward_pre_hooks))
    return out


def settled(model, precision: str, device: str, inputs):
    """`model` after one forward of `inputs` where it rewrites its own weights on its first forward
    (bitsandbytes repacks 4-bit weights on a CPU with avx512_bf16), so that SharedBase fingerprints the
    weights every later forward computes with. Without it, each state's undo would find the weights changed
    since the load and drop the base: a load per state (seen on such a CPU, 2026-12-06). A fresh model per
    state repacks on its first forward too, before it computes: the outputs are the same bit for bit
    (tests/engine/test_oracle_base.py)."""
    if repacks_on_first_forward(precision, device):
        import torch

        with torch.no_grad():
            model(**inputs.as_kwargs())
    return model


@dataclass
class SharedBase:
    """The base model, loaded by `load` on first use and held until `release`."""

    load: Callable[[], Any]
    model: Any = None
    misses: int = 0  # undos that did not give the loaded base back: the model was dropped, not reused
    originals: dict[int, tuple[Any, Any]] = field(default_factory=dict)  # Edits.keep's copies, for this model
    _print: dict[str, tuple] = field(default_factory=dict)

    def take(self):
        if self.model is None:
            self.model = self.load()
            self._print = fingerprint(self.model)
            self.originals = {}
        return self.model

    def edits(self) -> Edits:
        """A recorder for the next state on this base."""
        return Edits(originals=self.originals)

    def give_back(self, edits: Edits) -> None:
        """Undo `edits` and check the base is as loaded; drop it where it is not."""
        if self.model is None:
            return
        try:
            edits.undo()
            same = fingerprint(self.model) == self._print
        except BaseException:
            self.release()
            raise
        if not same:
            self.misses += 1
            self.release()

    def release(self) -> None:
        self.model = None
        self._print, self.originals = {}, {}
