"""Model shapes from Hugging Face causal-LM configs: dimensions and layout, no torch.

A :class:`ModelShape` is what the memory model and the workloads need to know about a model:
its dimensions (layers, width, query and key-value heads, head size, MLP width, vocabulary,
position limit) and its layout (GPT-2's learned positions, LayerNorm with biases and a
two-matrix GELU MLP; or the Llama family's RoPE, RMSNorm and three-matrix SwiGLU MLP, with
or without biases on the attention projections, tied or untied embeddings).

:func:`resolve` takes a built-in name (:data:`BUILTIN_CONFIGS`, written out from the public
``config.json`` of each model so nothing is ever downloaded) or a path to a local
``config.json`` or a model directory holding one. Simulated paths need only this module, so
it imports neither torch nor transformers; :mod:`experiments.workload` builds the real model
from the same fields.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from agents.errors import ConfigError

# -- built-in configs -------------------------------------------------------------------------
# The fields of each model's public config.json (only those that shape the model are kept;
# dropout, token ids and versions are left out). A local config.json of the same model
# resolves to the same shape.

_GPT2_FIELDS = {"model_type": "gpt2", "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}

BUILTIN_CONFIGS: dict[str, dict[str, Any]] = {
    # A toy GPT-2 for tests and CPU stand-ins; its large position limit keeps context from
    # ever being its constraint.
    "tiny": {**_GPT2_FIELDS, "n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 1000, "n_positions": 8192},
    # https://huggingface.co/openai-community/gpt2/blob/main/config.json (GPT-2 small, 124M,
    # tied embeddings: the LM head is the token embedding).
    "gpt2": {**_GPT2_FIELDS, "n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024,
             "n_ctx": 1024},
    "124m": {**_GPT2_FIELDS, "n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024},
    # https://huggingface.co/openai-community/gpt2-xl/blob/main/config.json (1.5B)
    "1.5b": {**_GPT2_FIELDS, "n_layer": 48, "n_embd": 1600, "n_head": 25, "vocab_size": 50257, "n_positions": 1024},
    # https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json: GQA 32 query / 8
    # key-value heads of 128, SwiGLU 14336, vocabulary 128256, untied, no biases, RoPE with
    # llama3 scaling to 131072 positions. 8,030,261,248 parameters.
    "llama-3.1-8b": {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 128256, "max_position_embeddings": 131072, "hidden_act": "silu", "rms_norm_eps": 1e-5,
        "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False, "rope_theta": 500000.0,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "torch_dtype": "bfloat16",
    },
    # https://huggingface.co/Qwen/Qwen2.5-7B/blob/main/config.json: GQA 28 / 4 heads of 128,
    # SwiGLU 18944, vocabulary 152064, untied, biases on q/k/v (not o), 131072 positions,
    # no sliding window (use_sliding_window false). 7,615,616,512 parameters.
    "qwen2.5-7b": {
        "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 3584,
        "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
        "vocab_size": 152064, "max_position_embeddings": 131072, "hidden_act": "silu", "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False, "rope_theta": 1000000.0, "use_sliding_window": False,
        "sliding_window": 131072, "max_window_layers": 28, "torch_dtype": "bfloat16",
    },
    # https://huggingface.co/mistralai/Mistral-7B-v0.3/blob/main/config.json: GQA 32 / 8 heads
    # of 128, SwiGLU 14336, vocabulary 32768, untied, no biases, 32768 positions, no sliding
    # window. 7,248,023,552 parameters.
    "mistral-7b": {
        "model_type": "mistral", "architectures": ["MistralForCausalLM"], "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 32768, "max_position_embeddings": 32768, "hidden_act": "silu", "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False, "rope_theta": 1000000.0, "sliding_window": None, "torch_dtype": "bfloat16",
    },
}

# Layout of each supported family (what a config of that model_type builds in transformers).
# tie: the config class's default for tie_word_embeddings; qkv_bias/o_bias/mlp_bias: fixed
# by the family, or the config field that switches them.
_FAMILIES: dict[str, dict[str, Any]] = {
    "gpt2": {"mlp": "gelu", "norm": "layernorm", "position": "learned", "tie": True,
             "qkv_bias": True, "o_bias": True, "mlp_bias": True},
    "llama": {"mlp": "gated", "norm": "rmsnorm", "position": "rope", "tie": False,
              "qkv_bias": "attention_bias", "o_bias": "attention_bias", "mlp_bias": "mlp_bias"},
    "mistral": {"mlp": "gated", "norm": "rmsnorm", "position": "rope", "tie": False,
                "qkv_bias": False, "o_bias": False, "mlp_bias": False},
    "qwen2": {"mlp": "gated", "norm": "rmsnorm", "position": "rope", "tie": False,
              "qkv_bias": True, "o_bias": False, "mlp_bias": False},
}
FAMILIES = tuple(_FAMILIES)

# Compatibility: the GPT-2 dimensions of the built-in GPT-2 shapes.
_GPT2_KEYS = ("n_layer", "n_embd", "n_head", "vocab_size", "n_positions")
SHAPES: dict[str, dict[str, int]] = {
    k: {f: v[f] for f in _GPT2_KEYS} for k, v in BUILTIN_CONFIGS.items() if v["model_type"] == "gpt2"
}


@dataclass(frozen=True)
class ModelShape:
    """Dimensions and layout of a causal LM (see the module docstring)."""

    name: str = field(compare=False)  # the built-in name or the path it was read from
    family: str  # the config's model_type
    n_layer: int
    hidden_size: int
    n_head: int
    n_kv_head: int  # key-value heads (GQA: fewer than n_head)
    head_dim: int
    intermediate_size: int
    vocab_size: int
    n_positions: int  # the position limit (n_positions or max_position_embeddings)
    mlp: str  # "gelu": up and down (GPT-2); "gated": gate, up and down (SwiGLU)
    norm: str  # "layernorm" (weight and bias) | "rmsnorm" (weight)
    position: str  # "learned" (a position table) | "rope" (no weights)
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    sliding_window: int | None = None  # tokens a layer attends to, when the config turns a window on
    config: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the config's fields

    @property
    def builtin(self) -> bool:
        """True for a built-in name, False for a shape read from a path."""
        return self.name in BUILTIN_CONFIGS

    def kv_cache_bytes_per_token(self, dtype_bytes: int) -> int:
        """Bytes the KV cache holds per token of one sequence: 2 (K, V) x layers x kv heads x head_dim x dtype."""
        return 2 * self.n_layer * self.n_kv_head * self.head_dim * int(dtype_bytes)

    def with_positions(self, n_positions: int | None) -> "ModelShape":
        """The same shape with another position limit (None: unchanged)."""
        if n_positions is None:
            return self
        if int(n_positions) < 1:
            raise ConfigError(f"n_positions must be >= 1, got {n_positions}")
        key = "n_positions" if self.family == "gpt2" else "max_position_embeddings"
        return replace(self, n_positions=int(n_positions), config={**self.config, key: int(n_positions)})

    def tiny(self) -> "ModelShape":
        """A toy of the same family and layout: 2 layers, heads of 16, the same query/key-value head ratio."""
        groups = self.n_head // self.n_kv_head
        heads = 2 * groups if groups > 1 else 4
        fields = _tiny_fields(self.family, heads, heads // groups if groups > 1 else heads)
        fields["tie_word_embeddings"] = self.tie_word_embeddings
        if self.family == "llama":
            fields.update(attention_bias=self.qkv_bias, mlp_bias=self.mlp_bias)
        return from_config(fields, f"{self.name} (tiny)")

    def summary(self) -> dict[str, Any]:
        """The dimensions and layout as a plain dict (for reports)."""
        d = asdict(self)
        d.pop("config")
        return d


def _tiny_fields(family: str, heads: int, kv_heads: int) -> dict[str, Any]:
    if family == "gpt2":
        return {**_GPT2_FIELDS, "n_layer": 2, "n_embd": 64, "n_head": heads, "vocab_size": 1000, "n_positions": 8192}
    return {"model_type": family, "hidden_size": 16 * heads, "intermediate_size": 40 * heads, "num_hidden_layers": 2,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": 1000,
            "max_position_embeddings": 8192}


def is_builtin(spec: str) -> bool:
    """True when ``spec`` names a built-in config rather than a path."""
    return str(spec) in BUILTIN_CONFIGS


is_shape = is_builtin  # the older name


def resolve(spec: str | Path | ModelShape, n_positions: int | None = None) -> ModelShape:
    """The shape of a built-in name, a local ``config.json`` or a model directory holding one.

    Raises :class:`ConfigError` (one line naming the name, file or field) for an unknown
    name, a missing or unreadable file, or a config that lacks a field or has a bad one.
    """
    if isinstance(spec, ModelShape):
        return spec.with_positions(n_positions)
    text = str(spec)
    if text in BUILTIN_CONFIGS:
        return from_config(BUILTIN_CONFIGS[text], text).with_positions(n_positions)
    path = Path(text)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ConfigError(f"--model {text!r}: neither a built-in model ({', '.join(BUILTIN_CONFIGS)}) nor a local "
                          f"config.json or model directory holding one")
    try:
        fields = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable JSON config ({exc}); fix the file or pass a built-in name") from None
    if not isinstance(fields, dict):
        raise ConfigError(f"{path}: a config.json must hold a JSON object, got {type(fields).__name__}")
    return from_config(fields, str(path)).with_positions(n_positions)


def from_config(fields: Mapping[str, Any], source: str = "config") -> ModelShape:
    """A :class:`ModelShape` from a config's fields (a config.json's dict or ``config.to_dict()``)."""
    family = fields.get("model_type")
    if family not in _FAMILIES:
        raise ConfigError(f"{source}: field 'model_type' is {family!r}; supported: {', '.join(FAMILIES)}")
    traits = _FAMILIES[family]

    def num(key: str, default: Any = ..., alias: str | None = None) -> int:
        value = fields.get(key, fields.get(alias) if alias else None)
        if value is None:
            if default is ...:
                raise ConfigError(f"{source}: field {key!r} is missing; a {family} config needs it")
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{source}: field {key!r} must be a positive integer, got {value!r}")
        return value

    def flag(trait: Any) -> bool:
        if isinstance(trait, bool):
            return trait
        value = fields.get(trait, False)
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: field {trait!r} must be true or false, got {value!r}")
        return value

    if family == "gpt2":
        n_layer, width, heads = num("n_layer"), num("n_embd"), num("n_head")
        kv_heads, inner, positions = heads, num("n_inner", 4 * width), num("n_positions")
        head_dim = width // heads
        if head_dim * heads != width:
            raise ConfigError(f"{source}: field 'n_embd' ({width}) must be a multiple of 'n_head' ({heads})")
    else:
        n_layer, width = num("num_hidden_layers"), num("hidden_size")
        heads = num("num_attention_heads")
        kv_heads = num("num_key_value_heads", heads)
        inner, positions = num("intermediate_size"), num("max_position_embeddings")
        if fields.get("head_dim") is None and width % heads:
            raise ConfigError(f"{source}: field 'hidden_size' ({width}) must be a multiple of "
                              f"'num_attention_heads' ({heads}), or set 'head_dim'")
        head_dim = num("head_dim", width // heads)
        if heads % kv_heads:
            raise ConfigError(f"{source}: field 'num_key_value_heads' ({kv_heads}) must divide "
                              f"'num_attention_heads' ({heads})")
    window = None
    if family == "mistral" or (family == "qwen2" and fields.get("use_sliding_window") is True):
        window = num("sliding_window", None)
    tie = fields.get("tie_word_embeddings", traits["tie"])
    if not isinstance(tie, bool):
        raise ConfigError(f"{source}: field 'tie_word_embeddings' must be true or false, got {tie!r}")
    return ModelShape(
        name=source, family=family, n_layer=n_layer, hidden_size=width, n_head=heads, n_kv_head=kv_heads,
        head_dim=head_dim, intermediate_size=inner, vocab_size=num("vocab_size"), n_positions=positions,
        mlp=traits["mlp"], norm=traits["norm"], position=traits["position"], tie_word_embeddings=tie,
        qkv_bias=flag(traits["qkv_bias"]), o_bias=flag(traits["o_bias"]), mlp_bias=flag(traits["mlp_bias"]),
        sliding_window=window, config=dict(fields),
    )


def shape_dims(shape: str, n_positions: int | None = None) -> dict[str, int]:
    """GPT-2 style dimensions of a built-in or local model (n_layer, n_embd, n_head, vocab_size, n_positions)."""
    s = resolve(shape, n_positions)
    return {"n_layer": s.n_layer, "n_embd": s.hidden_size, "n_head": s.n_head, "vocab_size": s.vocab_size,
            "n_positions": s.n_positions}


def legacy_model_fields(data: Any) -> Any:
    """A config dict's older ``shape`` / ``model_path`` fields as ``model`` (for configs written before ``model``)."""
    if isinstance(data, dict) and ("shape" in data or "model_path" in data):
        data = dict(data)
        shape, path = data.pop("shape", None), data.pop("model_path", None)
        data.setdefault("model", path or shape)
    return data
