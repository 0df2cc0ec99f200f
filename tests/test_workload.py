"""GPT-2 workloads built from a config (no network), prefill/decode on the CPU, local paths."""

from __future__ import annotations

import os
import socket
import warnings

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported anywhere
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest
import torch

from agents.errors import ConfigError
from experiments import workload
from experiments.memory import ActivationModel


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("the workload tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def tiny():
    return workload.build_model("tiny")


def test_tiny_builds_from_config(tiny):
    dims = workload.model_dims(tiny)
    assert dims == {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 1000, "n_positions": 8192}
    assert not tiny.training and tiny.dtype == torch.float32
    assert tiny.config._attn_implementation == "eager"
    assert sum(p.numel() for p in tiny.parameters()) == ActivationModel.from_dims(dims).n_params()


@pytest.mark.parametrize("shape, n_params", [("124m", 124_439_808), ("1.5b", 1_557_611_200)])
def test_large_shapes_build_from_config(shape, n_params):
    # The meta device builds the full structure without allocating its weights.
    model = workload.build_model(shape, device="meta")
    assert sum(p.numel() for p in model.parameters()) == n_params
    dims = workload.model_dims(model)
    assert dims == workload.shape_dims(shape)
    assert ActivationModel.from_dims(dims).n_params() == n_params


def test_n_positions_override():
    model = workload.build_model("124m", n_positions=32768, device="meta", dtype="float16")
    assert model.config.n_positions == 32768
    assert model.transformer.wpe.weight.shape == (32768, 768)
    assert model.dtype == torch.float16
    with pytest.raises(ConfigError):
        workload.shape_dims("124m", n_positions=0)


def test_unknown_shape_or_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="neither a built-in model"):
        workload.build_model(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="neither a built-in model"):
        workload.shape_dims("7b")
    with pytest.raises(ConfigError, match="dtype"):
        workload.resolve_dtype("int3")


def test_synthetic_batch_is_deterministic():
    a = workload.synthetic_batch(3, 17, 1000, seed=5)
    b = workload.synthetic_batch(3, 17, 1000, seed=5)
    c = workload.synthetic_batch(3, 17, 1000, seed=6)
    assert a.shape == (3, 17) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert int(a.min()) >= 0 and int(a.max()) < 1000


def test_prefill_and_decode_on_cpu(tiny):
    ids = workload.synthetic_batch(2, 16, 1000, seed=0)
    pre = workload.prefill(tiny, ids)
    assert pre.input_tokens == 32 and pre.elapsed_s > 0 and pre.tokens_per_second > 0
    assert pre.next_ids.shape == (2, 1)
    assert workload.cache_length(pre.past) == 16
    dec = workload.decode(tiny, pre, 5)
    assert dec.output_tokens == 10 and dec.steps == 5 and dec.elapsed_s > 0
    assert workload.cache_length(dec.past) == 21
    # Rewinding replays the same greedy tokens from the same point.
    workload.rewind(dec.past, 5)
    assert workload.cache_length(dec.past) == 16
    again = workload.decode(tiny, dec.past, 5, pre.next_ids)
    assert torch.equal(again.next_ids, dec.next_ids)
    with pytest.raises(ValueError):
        workload.decode(tiny, pre.past, 1)  # a bare cache needs next_ids


def test_cached_decode_matches_greedy_without_cache_and_uses_no_deprecated_keyword(tiny):
    ids = workload.synthetic_batch(2, 12, 1000, seed=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dec = workload.decode(tiny, workload.prefill(tiny, ids), 6)
    deprecated = [str(w.message) for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert deprecated == []
    # The same greedy tokens from full forwards over the growing sequence, no cache at all.
    seq = ids
    with torch.inference_mode():
        for _ in range(7):
            nxt = tiny(input_ids=seq, use_cache=False).logits[:, -1, :].argmax(dim=-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(dec.next_ids, seq[:, -1:])
    assert workload.cache_length(dec.past) == 12 + 6


def test_local_path_loads_offline_and_extends_positions(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    loaded = workload.build_model(str(tmp_path), n_positions=9000)
    assert loaded.config.n_positions == 9000
    assert torch.equal(loaded.transformer.wpe.weight[:8192], tiny.transformer.wpe.weight)
    assert torch.equal(loaded.transformer.wte.weight, tiny.transformer.wte.weight)
    ids = workload.synthetic_batch(1, 8, 1000, seed=1)
    assert torch.equal(workload.prefill(loaded, ids).next_ids, workload.prefill(tiny, ids).next_ids)
