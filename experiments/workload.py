"""GPT-2 family workloads: models built from a config (random weights) or a local path.

Nothing is ever downloaded: a shape name builds ``GPT2LMHeadModel`` from a config with
random weights, a path loads with ``local_files_only=True``. Inputs are synthetic token
ids. ``prefill`` and ``decode`` time one event each; on CUDA they synchronize the device
before and after, so the host times bracket the GPU work. Build the model before the
measurement window: building is not part of any event.

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
from experiments.model_shapes import SHAPES, is_shape, shape_dims  # noqa: F401 - the public names here

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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


def model_dims(model_or_config: Any) -> dict[str, int]:
    """The GPT-2 dimensions of a model or config (also for a model loaded from a path)."""
    cfg = getattr(model_or_config, "config", model_or_config)
    dims = {
        "n_layer": int(cfg.n_layer),
        "n_embd": int(cfg.n_embd),
        "n_head": int(cfg.n_head),
        "vocab_size": int(cfg.vocab_size),
        "n_positions": int(cfg.n_positions),
    }
    if getattr(cfg, "n_inner", None):
        dims["n_inner"] = int(cfg.n_inner)
    return dims


def gpt2_config(shape: str, n_positions: int | None = None, attn_implementation: str = "eager"):
    """A fresh ``GPT2Config`` for a built-in shape (bos/eos ids inside the vocabulary)."""
    from transformers import GPT2Config

    dims = shape_dims(shape, n_positions)
    last = dims["vocab_size"] - 1
    cfg = GPT2Config(**dims, bos_token_id=last, eos_token_id=last)
    cfg._attn_implementation = attn_implementation
    return cfg


def build_model(
    shape_or_path: str | Path,
    n_positions: int | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.float32,
    attn_implementation: str = "eager",
):
    """A GPT-2 family model in eval mode on ``device``.

    ``shape_or_path`` is a shape of :data:`SHAPES` (random weights, built directly on the
    device; ``device="meta"`` builds the structure without memory) or a local model
    directory (``from_pretrained(path, local_files_only=True)``). ``n_positions`` overrides
    the position limit; for a loaded model a larger limit extends the position embedding
    with freshly initialised rows (the positions beyond the trained ones are untrained,
    which does not matter for memory and energy measurements).
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = resolve_dtype(dtype)
    device = torch.device(device)
    if is_shape(str(shape_or_path)):
        cfg = gpt2_config(str(shape_or_path), n_positions, attn_implementation)
        with device:
            model = AutoModelForCausalLM.from_config(
                cfg, **{_dtype_kwarg(): torch_dtype}, attn_implementation=attn_implementation
            )
    else:
        path = Path(shape_or_path)
        if not path.is_dir():
            raise ConfigError(
                f"model {str(shape_or_path)!r} is neither a shape ({', '.join(SHAPES)}) nor a local model directory"
            )
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path, local_files_only=True, **{_dtype_kwarg(): torch_dtype}, attn_implementation=attn_implementation
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot load a model from it ({str(exc).splitlines()[0]})") from None
        if n_positions is not None and int(n_positions) != int(model.config.n_positions):
            _set_positions(model, int(n_positions))
        model = model.to(device)
    model.eval()
    return model


def _dtype_kwarg() -> str:
    """transformers 5 names the argument ``dtype``; 4.x ``torch_dtype``."""
    import transformers

    return "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"


def _set_positions(model, n_positions: int) -> None:
    """Resize a GPT-2 model's position embedding to ``n_positions`` rows."""
    wpe = getattr(getattr(model, "transformer", None), "wpe", None)
    if wpe is None:
        raise ConfigError("n_positions can only be overridden for GPT-2 family models (transformer.wpe)")
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
