"""GPT-2 family shapes by name: dimensions only, no torch (simulated paths need just these)."""

from __future__ import annotations

from agents.errors import ConfigError

# ``tiny`` has a large position limit so that context is never its constraint; the others
# keep GPT-2's 1024 unless ``n_positions`` overrides it.
SHAPES: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 1000, "n_positions": 8192},
    "124m": {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024},
    "1.5b": {"n_layer": 48, "n_embd": 1600, "n_head": 25, "vocab_size": 50257, "n_positions": 1024},
}


def is_shape(shape_or_path: str) -> bool:
    """True when the argument names a built-in shape rather than a path."""
    return str(shape_or_path) in SHAPES


def shape_dims(shape: str, n_positions: int | None = None) -> dict[str, int]:
    """Dimensions of a built-in shape (n_layer, n_embd, n_head, vocab_size, n_positions)."""
    if shape not in SHAPES:
        raise ConfigError(f"unknown model shape {shape!r}: use one of {', '.join(SHAPES)} or a local model path")
    dims = dict(SHAPES[shape])
    if n_positions is not None:
        if int(n_positions) < 1:
            raise ConfigError(f"n_positions must be >= 1, got {n_positions}")
        dims["n_positions"] = int(n_positions)
    return dims
