"""Causal-LM workloads: models built from a config (random weights) or a local path.

Nothing is ever downloaded: a built-in name or a local ``config.json`` (or a model directory
holding only one) builds the model of its family (GPT-2, Llama, Mistral, Qwen2) with
``AutoModelForCausalLM.from_config``, random weights; a directory with weight files loads
them with ``local_files_only=True``. Inputs are synthetic token ids. ``prefill`` and
``decode`` time one event each; on CUDA they synchronize the device before and after, so
the host times bracket the GPU work. Build the model before the measurement window:
building is not part of any event.

``transformers`` is imported only when a model is built, so code that needs just the
dimensions (the simulated VRAM cliff) stays light.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agents.errors import ConfigError
from experiments import model_shapes
from experiments.model_shapes import SHAPES, ModelShape, is_shape, shape_dims  # noqa: F401 - the public names here

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# config.json fields that describe the checkpoint, not the model to build.
_NOT_MODEL_FIELDS = ("architectures", "torch_dtype", "dtype", "transformers_version", "_name_or_path", "model_type",
                     "auto_map")
_WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from a name ('float32', 'float16', 'bfloat16') or a dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype)]
    except KeyError:
        raise ConfigError(f"dtype {dtype!r} is not supported: use one of {', '.join(_DTYPES)}") from None


def dtype_name(dtype: str | torch.dtype) -> str:
    """The name ('float32', ...) of a dtype."""
    d = resolve_dtype(dtype)
    return next(k for k, v in _DTYPES.items() if v == d)


def model_shape(model_or_config: Any, name: str | None = None) -> ModelShape:
    """The :class:`ModelShape` of a model or a transformers config (also for a model loaded from a path)."""
    cfg = getattr(model_or_config, "config", model_or_config)
    fields = cfg.to_dict()
    return model_shapes.from_config(fields, name or str(fields.get("_name_or_path") or fields.get("model_type")))


def model_dims(model_or_config: Any) -> dict[str, int]:
    """GPT-2 style dimensions of a model or config of any supported family."""
    s = model_shape(model_or_config)
    dims = {"n_layer": s.n_layer, "n_embd": s.hidden_size, "n_head": s.n_head, "vocab_size": s.vocab_size,
            "n_positions": s.n_positions}
    if s.family == "gpt2" and s.config.get("n_inner"):
        dims["n_inner"] = s.intermediate_size
    return dims


def hf_config(shape: ModelShape, attn_implementation: str = "eager"):
    """A fresh transformers config of the shape's family from its fields (token ids inside the vocabulary)."""
    from transformers import AutoConfig

    fields = {k: v for k, v in shape.config.items() if k not in _NOT_MODEL_FIELDS}
    last = shape.vocab_size - 1
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = fields.get(key)
        if value is not None and not (isinstance(value, int) and 0 <= value <= last):
            fields[key] = last  # a token id outside a shrunk vocabulary would break generation
    if shape.family == "gpt2":
        fields.setdefault("bos_token_id", last)
        fields.setdefault("eos_token_id", last)
    try:
        cfg = AutoConfig.for_model(shape.family, **fields)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{shape.name}: transformers refuses the config ({str(exc).splitlines()[0]})") from None
    cfg._attn_implementation = attn_implementation
    return cfg


def gpt2_config(shape: str, n_positions: int | None = None, attn_implementation: str = "eager"):
    """A fresh ``GPT2Config`` for a built-in GPT-2 shape (bos/eos ids inside the vocabulary)."""
    return hf_config(model_shapes.resolve(shape, n_positions), attn_implementation)


def _has_weights(path: Path) -> bool:
    return path.is_dir() and any(any(path.glob(pattern)) for pattern in _WEIGHT_FILES)


def build_model(
    spec: str | Path | ModelShape,
    n_positions: int | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.float32,
    attn_implementation: str = "eager",
):
    """A causal LM in eval mode on ``device``.

    ``spec`` is a built-in name, a :class:`ModelShape`, a local ``config.json`` or a model
    directory holding only a config: the model is built from the config with random weights,
    directly on the device (``device="meta"`` builds the structure without memory). A
    directory with weight files loads them (``from_pretrained(path, local_files_only=True)``).
    ``n_positions`` overrides the position limit; for a loaded GPT-2 a larger limit extends
    the position embedding with freshly initialised rows (the positions beyond the trained
    ones are untrained, which does not matter for memory and energy measurements); a RoPE
    model has no position table, only its limit changes.
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = resolve_dtype(dtype)
    device = torch.device(device)
    if isinstance(spec, ModelShape) or not _has_weights(Path(str(spec))):
        shape = model_shapes.resolve(spec, n_positions)
        cfg = hf_config(shape, attn_implementation)
        with device:
            model = AutoModelForCausalLM.from_config(
                cfg, **{_dtype_kwarg(): torch_dtype}, attn_implementation=attn_implementation
            )
    else:
        path = Path(spec)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path, local_files_only=True, **{_dtype_kwarg(): torch_dtype}, attn_implementation=attn_implementation
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot load a model from it ({str(exc).splitlines()[0]})") from None
        if n_positions is not None:
            _set_positions(model, int(n_positions))
        model = model.to(device)
    model.eval()
    return model


def _dtype_kwarg() -> str:
    """transformers 5 names the argument ``dtype``; 4.x ``torch_dtype``."""
    import transformers

    return "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"


def _set_positions(model, n_positions: int) -> None:
    """Set a loaded model's position limit: a GPT-2's position table is resized, a RoPE model's limit is set."""
    wpe = getattr(getattr(model, "transformer", None), "wpe", None)
    if wpe is None:
        if hasattr(model.config, "max_position_embeddings"):
            model.config.max_position_embeddings = n_positions
            return
        raise ConfigError("n_positions can only be overridden for GPT-2 (transformer.wpe) or RoPE models")
    if n_positions == int(model.config.n_positions):
        return
    old = wpe.weight.data
    new = torch.nn.Embedding(n_positions, old.shape[1], dtype=old.dtype, device=old.device)
    with torch.no_grad():
        new.weight.normal_(0.0, getattr(model.config, "initializer_range", 0.02))
        keep = min(n_positions, old.shape[0])
        new.weight[:keep] = old[:keep]
    model.transformer.wpe = new
    model.config.n_positions = n_positions


def synthetic_batch(
    batch_size: int, seq_len: int, vocab: int, seed: int, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Token ids ``[batch_size, seq_len]`` drawn uniformly from ``[0, vocab)``; the same seed, the same ids."""
    if batch_size < 1 or seq_len < 1 or vocab < 1:
        raise ValueError(f"batch_size, seq_len and vocab must be >= 1, got {batch_size}, {seq_len}, {vocab}")
    gen = torch.Generator().manual_seed(int(seed))
    ids = torch.randint(0, int(vocab), (int(batch_size), int(seq_len)), generator=gen, dtype=torch.long)
    return ids.to(device)


def synchronize(device: str | torch.device | None) -> None:
    """``torch.cuda.synchronize`` on a CUDA device; nothing elsewhere."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class PrefillResult:
    """One prefill: the KV cache, the next token per sequence, and its timing."""

    past: Any  # a transformers Cache
    next_ids: torch.Tensor  # [batch, 1]
    input_tokens: int  # batch * seq_len
    t_start_ns: int
    t_end_ns: int

    @property
    def elapsed_s(self) -> float:
        """Seconds from start to end (device synchronized at both ends)."""
        return (self.t_end_ns - self.t_start_ns) / 1e9

    @property
    def tokens_per_second(self) -> float:
        """Input tokens processed per second."""
        return self.input_tokens / self.elapsed_s if self.elapsed_s > 0 else float("inf")


@dataclass
class DecodeResult:
    """One greedy decode of ``n_tokens`` steps: the grown cache, the last tokens, the timing."""

    past: Any
    next_ids: torch.Tensor
    output_tokens: int  # batch * n_tokens
    steps: int
    t_start_ns: int
    t_end_ns: int

    @property
    def elapsed_s(self) -> float:
        """Seconds from start to end (device synchronized at both ends)."""
        return (self.t_end_ns - self.t_start_ns) / 1e9

    @property
    def tokens_per_second(self) -> float:
        """Output tokens generated per second."""
        return self.output_tokens / self.elapsed_s if self.elapsed_s > 0 else float("inf")


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _cache_keyword(model) -> str:
    """The keyword the model's forward takes its KV cache by: ``cache`` in transformers 5.x,
    which deprecates ``past_key_values`` (removal announced for 5.40), and
    ``past_key_values`` before that."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out):
    """The KV cache a forward returned, under either name (see :func:`_cache_keyword`)."""
    return out["cache"] if "cache" in out else out.past_key_values


@torch.inference_mode()
def prefill(model, ids: torch.Tensor) -> PrefillResult:
    """Run the prompt ``ids`` [batch, seq] through ``model`` with a KV cache; timed."""
    device = _device_of(model)
    ids = ids.to(device)
    synchronize(device)
    t0 = time.monotonic_ns()
    out = model(input_ids=ids, use_cache=True)
    next_ids = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
    synchronize(device)
    t1 = time.monotonic_ns()
    return PrefillResult(_cache_of(out), next_ids, int(ids.numel()), t0, t1)


@torch.inference_mode()
def decode(model, past, n_tokens: int, next_ids: torch.Tensor | None = None) -> DecodeResult:
    """Greedy-decode ``n_tokens`` steps from ``past`` (a Cache or a :class:`PrefillResult`); timed.

    With a Cache, ``next_ids`` [batch, 1] is the first token to feed. The cache grows in
    place by ``n_tokens`` positions (see :func:`rewind` to replay from the same point).
    """
    if isinstance(past, PrefillResult):
        next_ids = past.next_ids if next_ids is None else next_ids
        past = past.past
    if next_ids is None:
        raise ValueError("decode needs next_ids when past is a cache")
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
    device = _device_of(model)
    ids = next_ids.to(device)
    keyword = _cache_keyword(model)
    synchronize(device)
    t0 = time.monotonic_ns()
    for _ in range(int(n_tokens)):
        out = model(input_ids=ids, use_cache=True, **{keyword: past})
        past = _cache_of(out)
        ids = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
    synchronize(device)
    t1 = time.monotonic_ns()
    return DecodeResult(past, ids, int(ids.shape[0]) * int(n_tokens), int(n_tokens), t0, t1)


def rewind(past, n_tokens: int) -> None:
    """Drop the last ``n_tokens`` positions of a cache in place (to decode again from there)."""
    if n_tokens > 0:
        # A negative argument removes that many tokens in transformers 4.x and 5.x alike.
        past.crop(-int(n_tokens))


def cache_length(past) -> int:
    """Positions held by a cache."""
    return int(past.get_seq_length())
