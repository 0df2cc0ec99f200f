"""Model shapes from HF configs and the memory model's ground truth for the built-in 8B-class models.

The hand-computed figures below follow each model's public config.json (cited in
experiments/model_shapes.py); the parameter counts are also what transformers builds from the
same configs (tests/test_workload_families.py checks that on the meta device).
"""

from __future__ import annotations

import json

import pytest

from agents.errors import ConfigError
from experiments import model_shapes
from experiments.memory import ActivationModel, MiB

BF16 = 2


def _act(name: str, dtype: str = "bfloat16", **kw) -> ActivationModel:
    return ActivationModel.from_shape(model_shapes.resolve(name), dtype, **kw)


def test_llama_3_1_8b_kv_cache_and_weights_by_hand():
    shape = model_shapes.resolve("llama-3.1-8b")
    assert (shape.family, shape.n_layer, shape.n_head, shape.n_kv_head, shape.head_dim) == ("llama", 32, 32, 8, 128)
    # 2 (K and V) x 32 layers x 8 key-value heads x 128 head_dim x 2 bytes
    assert shape.kv_cache_bytes_per_token(BF16) == 2 * 32 * 8 * 128 * 2 == 131072
    act = _act("llama-3.1-8b")
    assert act.kv_cache_bytes_per_token() == 131072
    assert act.kv_cache_bytes(4, 1000) == 4 * 1000 * 131072
    e, i, v, kv = 4096, 14336, 128256, 8 * 128
    per_layer = e * e + 2 * e * kv + e * e + 3 * e * i + 2 * e  # q, k+v, o, gate/up/down, two RMSNorms
    n_params = 2 * v * e + 32 * per_layer + e  # untied embedding and LM head, final norm
    assert n_params == act.n_params() == 8_030_261_248
    assert act.weight_bytes() == n_params * 2 == 16_060_522_496


def test_qwen2_5_7b_by_hand_has_qkv_biases_and_four_kv_heads():
    act = _act("qwen2.5-7b")
    assert act.kv_cache_bytes_per_token() == 2 * 28 * 4 * 128 * 2 == 57344
    e, i, v, kv = 3584, 18944, 152064, 4 * 128
    per_layer = (e * e + e) + 2 * (e * kv + kv) + e * e + 3 * e * i + 2 * e  # q/k/v with bias, o without
    assert act.n_params() == 2 * v * e + 28 * per_layer + e == 7_615_616_512
    assert act.weight_bytes() == 7_615_616_512 * 2


def test_mistral_7b_by_hand():
    act = _act("mistral-7b")
    assert act.kv_cache_bytes_per_token() == 131072
    e, i, v, kv = 4096, 14336, 32768, 8 * 128
    assert act.n_params() == 2 * v * e + 32 * (2 * e * e + 2 * e * kv + 3 * e * i + 2 * e) + e == 7_248_023_552


def test_gpt2_is_tied_with_learned_positions():
    act = _act("gpt2", "float32")
    assert act.kv_cache_bytes_per_token() == 2 * 12 * 768 * 4
    assert act.n_params() == 124_439_808
    assert _act("gpt2", "bfloat16").kv_cache_bytes_per_token() == 36864


def test_gqa_shrinks_the_kv_cache_by_the_head_ratio_and_tying_drops_the_head():
    fields = dict(model_shapes.BUILTIN_CONFIGS["llama-3.1-8b"])
    mha = model_shapes.from_config({**fields, "num_key_value_heads": 32}, "mha")
    gqa = model_shapes.resolve("llama-3.1-8b")
    assert mha.kv_cache_bytes_per_token(2) == 4 * gqa.kv_cache_bytes_per_token(2)
    tied = ActivationModel.from_shape(model_shapes.from_config({**fields, "tie_word_embeddings": True}, "t"))
    assert _act("llama-3.1-8b", "float32").n_params() - tied.n_params() == 128256 * 4096


def test_bf16_eager_attention_holds_the_float32_softmax():
    bf16, fp32 = _act("llama-3.1-8b"), _act("llama-3.1-8b", "float32")
    names16 = dict(bf16.peak_tensors(1, 8192))
    assert bf16.peak_component(1, 8192) == "attention"
    assert names16["attn.softmax_fp32"] == 32 * 8192 * 8192 * 4
    assert names16["attn.scores"] == 32 * 8192 * 8192 * 2
    assert "attn.k_repeated" in names16  # GQA: eager repeats K and V to 32 heads
    assert "attn.softmax_fp32" not in dict(fp32.peak_tensors(1, 8192))
    sdpa = _act("llama-3.1-8b", attn_implementation="sdpa")
    assert sdpa.peak_bytes(1, 8192) < bf16.peak_bytes(1, 8192) / 5
    # At short context the logits of a 128k vocabulary set the peak.
    assert bf16.peak_component(4, 256) == "lm_head"


def test_decode_peak_holds_the_grown_cache_and_one_old_layer():
    act = _act("llama-3.1-8b", attn_implementation="sdpa")
    tensors = dict(act.decode_peak_tensors(2, 4096))
    assert sum(n for k, n in tensors.items() if k.startswith("kv.") and k[3].isdigit()) == act.kv_cache_bytes(2, 4097)
    assert tensors["kv.cat_old_v"] == 2 * 4096 * 8 * 128 * 2
    assert act.decode_peak_bytes(2, 4096) < act.peak_bytes(2, 4096)
    assert act.serve_peak_bytes(2, 128, 64) == max(act.peak_bytes(2, 128), act.decode_peak_bytes(2, 191))


def test_predicted_cliff_on_an_h100_is_memory_bound():
    act = _act("llama-3.1-8b")
    budget = (81559 - 500) * MiB - act.weight_bytes()
    t = act.max_context(1, budget, limit=1 << 20)
    assert act.peak_bytes(1, t) <= budget < act.peak_bytes(1, t + 1)
    assert 10_000 < t < 20_000  # eager bf16: the 32 x T^2 scores (2 + 2 + 4 bytes) dominate
    assert abs(act.approx_max_context(1, budget) - t) < 0.05 * t


def test_local_config_and_model_directory_resolve_like_the_builtin(tmp_path):
    fields = {**model_shapes.BUILTIN_CONFIGS["qwen2.5-7b"], "bos_token_id": 151643, "attention_dropout": 0.0}
    (tmp_path / "config.json").write_text(json.dumps(fields))
    builtin = model_shapes.resolve("qwen2.5-7b")
    for spec in (tmp_path / "config.json", tmp_path, str(tmp_path)):
        shape = model_shapes.resolve(spec)
        assert shape == builtin and not shape.builtin and shape.name == str(tmp_path / "config.json")
    assert model_shapes.resolve(tmp_path, n_positions=4096).n_positions == 4096


@pytest.mark.parametrize("fields, field", [
    ({"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 8,
      "vocab_size": 10, "max_position_embeddings": 64}, "'hidden_size' is missing"),
    ({**model_shapes.BUILTIN_CONFIGS["mistral-7b"], "num_attention_heads": "32"}, "'num_attention_heads' must be"),
    ({**model_shapes.BUILTIN_CONFIGS["mistral-7b"], "num_key_value_heads": 5}, "'num_key_value_heads' (5) must"),
    ({**model_shapes.BUILTIN_CONFIGS["mistral-7b"], "model_type": "bert"}, "'model_type' is 'bert'"),
    ({**model_shapes.BUILTIN_CONFIGS["llama-3.1-8b"], "tie_word_embeddings": "no"}, "'tie_word_embeddings'"),
    ({**model_shapes.BUILTIN_CONFIGS["gpt2"], "n_embd": 770}, "'n_embd' (770) must be a multiple"),
])
def test_malformed_config_names_the_field(tmp_path, fields, field):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(fields))
    with pytest.raises(ConfigError) as err:
        model_shapes.resolve(path)
    msg = str(err.value)
    assert field in msg and str(path) in msg and "\n" not in msg


def test_unknown_name_and_unreadable_file_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="neither a built-in model .*llama-3.1-8b"):
        model_shapes.resolve("llama-9")
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable JSON config"):
        model_shapes.resolve(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        model_shapes.resolve(bad)


def test_tiny_keeps_the_family_layout():
    for name in ("llama-3.1-8b", "qwen2.5-7b", "mistral-7b", "gpt2"):
        big, tiny = model_shapes.resolve(name), model_shapes.resolve(name).tiny()
        assert (tiny.family, tiny.mlp, tiny.qkv_bias, tiny.o_bias, tiny.tie_word_embeddings) == \
            (big.family, big.mlp, big.qkv_bias, big.o_bias, big.tie_word_embeddings)
        assert tiny.n_head // tiny.n_kv_head == big.n_head // big.n_kv_head
        assert tiny.n_layer == 2 and tiny.hidden_size <= 256


def test_module_imports_neither_torch_nor_transformers():
    assert not hasattr(model_shapes, "torch") and not hasattr(model_shapes, "transformers")


def test_sliding_window_only_when_the_config_turns_it_on():
    mistral = dict(model_shapes.BUILTIN_CONFIGS["mistral-7b"])
    assert model_shapes.resolve("mistral-7b").sliding_window is None
    assert model_shapes.from_config({**mistral, "sliding_window": 4096}).sliding_window == 4096
    qwen = dict(model_shapes.BUILTIN_CONFIGS["qwen2.5-7b"])
    assert model_shapes.resolve("qwen2.5-7b").sliding_window is None  # use_sliding_window false
    assert model_shapes.from_config({**qwen, "use_sliding_window": True}).sliding_window == 131072
    sdpa = ActivationModel.from_shape(model_shapes.from_config({**mistral, "sliding_window": 4096}), "bfloat16",
                                      attn_implementation="sdpa")
    plain = ActivationModel.from_shape(model_shapes.resolve("mistral-7b"), "bfloat16", attn_implementation="sdpa")
    assert sdpa.peak_bytes(1, 8192) - plain.peak_bytes(1, 8192) == 8192 * 8192  # SDPA's boolean window mask
