"""Loading the model under test and the fixed inputs, the way a user does it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.spec.precision import load_kwargs
from bench.spec.schema import Workload


@dataclass(frozen=True)
class Inputs:
    input_ids: Any
    attention_mask: Any

    def as_kwargs(self) -> dict[str, Any]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


def load_model(
    location: str,
    precision: str,
    device: str,
    *,
    quant=None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
):
    """trust_remote_code and allow_pickle stay off unless the scenario or the command line opts in: a model
    folder's own Python code, and pickle weight files, can run anything when loaded."""
    from transformers import AutoModelForCausalLM

    kwargs = load_kwargs(precision, device, quant)
    model = AutoModelForCausalLM.from_pretrained(
        location,
        trust_remote_code=trust_remote_code,
        use_safetensors=None if allow_pickle else True,
        **kwargs,
    )
    if "device_map" not in kwargs:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def make_inputs(workload: Workload, vocab_size: int, device: str) -> Inputs:
    """Token ids from a private seeded generator; ids 0-2 (pad, bos, eos) are avoided so greedy decoding
    of a random prompt does not stop early."""
    import torch

    gen = torch.Generator().manual_seed(workload.seed)
    ids = torch.randint(3, vocab_size, (workload.batch_size, workload.seq_len), generator=gen)
    return Inputs(ids.to(device), torch.ones_like(ids).to(device))


def vocab_size_of(model) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


def generate_kwargs(workload: Workload, pad_token_id: int | None, *, logits: bool = False) -> dict[str, Any]:
    """logits=True: a dict output with each step's logits (output_logits), for the output check."""
    kwargs = {
        "max_new_tokens": workload.new_tokens,
        "min_new_tokens": workload.new_tokens,
        "do_sample": False,
        "pad_token_id": pad_token_id if pad_token_id is not None else 0,
    }
    if logits:
        kwargs |= {"output_logits": True, "return_dict_in_generate": True}
    return kwargs
