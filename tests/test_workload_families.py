"""Llama, Qwen2, Mistral and GPT-2 workloads built from configs (random weights, no network):
real forward passes on the CPU with tiny configs of each family, and the memory model against
what transformers builds and what the KV cache really holds."""

from __future__ import annotations

import json
import os
import socket

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported anywhere
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest
import torch

from experiments import model_shapes, workload
from experiments.memory import ActivationModel

FAMILIES = ("gpt2", "llama-3.1-8b", "qwen2.5-7b", "mistral-7b")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the workload tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _cache_bytes(past) -> int:
    return sum(t.numel() * t.element_size() for layer in past.layers for t in (layer.keys, layer.values))


@pytest.mark.parametrize("name", FAMILIES)
def test_tiny_of_each_family_runs_prefill_and_decode_with_the_modelled_cache(name):
    shape = model_shapes.resolve(name).tiny()
    model = workload.build_model(shape, dtype="float32")
    assert type(model).__name__.lower().startswith(shape.family)
    act = ActivationModel.from_shape(shape, "float32")
    assert sum(p.numel() for p in model.parameters()) == act.n_params()
    assert sorted(p.numel() for p in model.parameters()) == sorted(n for _, n in act.weight_elements())
    ids = workload.synthetic_batch(3, 17, shape.vocab_size, seed=0)
    pre = workload.prefill(model, ids)
    assert workload.cache_length(pre.past) == 17 and pre.next_ids.shape == (3, 1)
    assert _cache_bytes(pre.past) == act.kv_cache_bytes(3, 17)
    dec = workload.decode(model, pre, 5)
    assert dec.output_tokens == 15 and workload.cache_length(dec.past) == 22
    assert _cache_bytes(dec.past) == act.kv_cache_bytes(3, 22)
    workload.rewind(dec.past, 5)  # the Joule curve replays decode passes from the same point
    again = workload.decode(model, dec.past, 5, pre.next_ids)
    assert torch.equal(again.next_ids, dec.next_ids)


def test_bfloat16_halves_the_cache():
    shape = model_shapes.resolve("llama-3.1-8b").tiny()
    model = workload.build_model(shape, dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    pre = workload.prefill(model, workload.synthetic_batch(2, 9, shape.vocab_size, seed=1))
    assert _cache_bytes(pre.past) == ActivationModel.from_shape(shape, "bfloat16").kv_cache_bytes(2, 9)
    assert _cache_bytes(pre.past) * 2 == ActivationModel.from_shape(shape, "float32").kv_cache_bytes(2, 9)


@pytest.mark.parametrize("name", ["llama-3.1-8b", "qwen2.5-7b", "mistral-7b"])
def test_builtin_8b_class_builds_from_its_config_with_the_modelled_parameters(name):
    model = workload.build_model(name, device="meta", dtype="bfloat16")  # structure only, no memory
    shape = model_shapes.resolve(name)
    assert sum(p.numel() for p in model.parameters()) == ActivationModel.from_shape(shape).n_params()
    assert workload.model_shape(model) == shape
    cfg = model.config
    assert (cfg.num_key_value_heads, cfg.intermediate_size, cfg.vocab_size) == \
        (shape.n_kv_head, shape.intermediate_size, shape.vocab_size)


def test_local_config_json_builds_random_weights(tmp_path):
    fields = {**model_shapes.resolve("qwen2.5-7b").tiny().config, "architectures": ["Qwen2ForCausalLM"],
              "torch_dtype": "bfloat16", "bos_token_id": 151643}
    (tmp_path / "config.json").write_text(json.dumps(fields))
    for spec in (tmp_path, tmp_path / "config.json"):
        model = workload.build_model(str(spec), n_positions=512)
        assert type(model).__name__ == "Qwen2ForCausalLM" and model.config.max_position_embeddings == 512
        assert model.config.bos_token_id < model.config.vocab_size  # ids outside the toy vocabulary are moved in
        assert model.model.layers[0].self_attn.q_proj.bias is not None
        assert workload.prefill(model, workload.synthetic_batch(1, 8, 1000, seed=2)).next_ids.shape == (1, 1)
    assert workload.model_dims(model)["n_layer"] == 2
