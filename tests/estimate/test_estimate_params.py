"""Parameter counts from configs and safetensors headers, against real transformers models and published counts."""

from __future__ import annotations

import json

import pytest

from bench.engine.sources.models import BUILTIN_MODELS
from bench.estimate.params import (
    builtin_config,
    count_from_config,
    count_from_safetensors,
    count_in_folder,
    hub_snapshot,
    layer_count,
    layers_from_config,
    parameter_count,
)

SMALL_BUILTINS = ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "small-llama", "tiny-gemma2", "tiny-moe"]


@pytest.mark.parametrize("name", SMALL_BUILTINS)
def test_config_count_equals_the_built_model(name):
    import torch
    import transformers

    entry = BUILTIN_MODELS[name]
    config = getattr(transformers, entry["config_class"])(**entry["config"])
    with torch.device("meta"):  # shapes only: no weights are allocated
        model = getattr(transformers, entry["model_class"])(config)
    assert count_from_config(builtin_config(name)) == model.num_parameters()


def test_real_checkpoint_shapes_match_their_published_counts():
    # SmolLM2-135M: 134,515,008 parameters; Qwen2.5-0.5B: 494,032,768 (their model cards / safetensors).
    assert parameter_count("builtin:smollm2-135m-shape") == 134_515_008
    assert parameter_count("builtin:qwen2.5-0.5b-shape") == 494_032_768


def test_a_flag_changes_the_count():
    # Negative control: the count reads the config, it is not a table of known answers.
    config = builtin_config("tiny-llama")
    untied = count_from_config(config)
    tied = count_from_config({**config, "tie_word_embeddings": True})
    assert untied - tied == config["vocab_size"] * config["hidden_size"]
    qwen = builtin_config("tiny-qwen2")
    assert count_from_config(qwen) - count_from_config({**qwen, "model_type": "llama"}) == 2 * (
        64 + 2 * 32
    )  # q, k, v biases per layer (4 heads of 16, 2 KV heads of 16), 2 layers


@pytest.mark.parametrize(
    "config",
    [
        {"model_type": "llama", "hidden_size": 64},  # sizes missing: never a default
        {"model_type": "t5", "d_model": 512},  # a family the estimate cannot count
        {"model_type": "llama", **{k: "x" for k in ("hidden_size", "intermediate_size")}},
        {},
    ],
)
def test_unknown_configs_count_as_none(config):
    assert count_from_config(config) is None


def test_unknown_sources_are_none(tmp_path):
    assert parameter_count("builtin:no-such-model") is None
    assert parameter_count("someone/not-in-any-cache", env={"HF_HUB_CACHE": str(tmp_path)}) is None
    assert parameter_count(str(tmp_path)) is None  # a folder without weights or config


def test_safetensors_headers_are_summed_without_reading_tensors(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(3, 4), "b": torch.zeros(5)}, tmp_path / "model-00001.safetensors")
    save_file({"c": torch.zeros(2, 2, 2)}, tmp_path / "model-00002.safetensors")
    assert count_from_safetensors(tmp_path) == 12 + 5 + 8
    (tmp_path / "config.json").write_text(json.dumps(builtin_config("tiny-llama")))
    assert count_in_folder(tmp_path) == 25  # the weights win over the config: they are exact


def test_a_truncated_safetensors_file_is_unknown(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":')
    assert count_from_safetensors(tmp_path) is None


def test_a_hub_id_is_counted_from_the_hugging_face_cache(tmp_path):
    snapshot = tmp_path / "models--org--model" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(builtin_config("tiny-llama")))
    env = {"HF_HUB_CACHE": str(tmp_path)}
    assert hub_snapshot("org/model", env) == snapshot
    assert parameter_count("org/model", env) == count_from_config(builtin_config("tiny-llama"))
    assert parameter_count("org/other", env) is None


def test_every_builtin_model_has_a_count():
    """A new built-in whose family the counter does not know would be `unknown` in every estimate (seen:
    tiny-gemma2 before gemma2 was added)."""
    assert [n for n in BUILTIN_MODELS if count_from_config(builtin_config(n)) is None] == []
    assert set(SMALL_BUILTINS) | {"smollm2-135m-shape", "qwen2.5-0.5b-shape"} == set(BUILTIN_MODELS)


def test_layer_counts_from_configs_folders_and_the_hub_cache(tmp_path):
    """What a compile's trace grows with: the decoder layers of the config, found where the parameter count is
    found (built-in, local folder, Hub cache); None where there is no config or no such field."""
    assert layer_count("builtin:smollm2-135m-shape") == 30
    assert layer_count("builtin:qwen2.5-0.5b-shape") == 24
    assert layer_count("builtin:tiny-gpt2") == BUILTIN_MODELS["tiny-gpt2"]["config"]["n_layer"]
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 32}))
    assert layer_count(str(folder)) == 32
    snapshot = tmp_path / "hub" / "models--org--model" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"n_layer": 12}))
    assert layer_count("org/model", {"HF_HUB_CACHE": str(tmp_path / "hub")}) == 12
    # Negative controls: unknown model, a folder without a config, a config without layers or a bad value.
    assert layer_count("builtin:no-such-model") is None
    assert layer_count("org/other", {"HF_HUB_CACHE": str(tmp_path / "hub")}) is None
    assert layer_count(str(tmp_path)) is None
    assert layers_from_config({"hidden_size": 8}) is None
    assert layers_from_config({"num_hidden_layers": "many"}) is None
    assert layers_from_config({"num_hidden_layers": 0}) is None


def test_every_builtin_model_has_a_layer_count():
    assert [n for n in BUILTIN_MODELS if layer_count(f"builtin:{n}") is None] == []
