"""KV caches in mlx-lm's cache protocol, by mode; the one place that knows their byte cost.

fp16 uses mlx-lm's own caches. The compressed modes (int4, int8, auto) plug in here.
"""

from mlx_lm.models.cache import make_prompt_cache

from app.engine.errors import FolioError

FP16_BYTES = 2


def fp16_bytes_per_token(shape) -> int:
    """Bytes one token costs across all KV layers in an fp16 cache (K and V)."""
    return shape.kv_layers * 2 * shape.n_kv_heads * shape.head_dim * FP16_BYTES


def bytes_per_token(shape, mode: str) -> float:
    if mode == "fp16":
        return float(fp16_bytes_per_token(shape))
    raise FolioError(f"KV mode {mode!r} is not available.")


def make_cache(loaded, mode: str) -> list:
    if mode == "fp16":
        return make_prompt_cache(loaded.model)
    raise FolioError(f"KV mode {mode!r} is not available.")


def describe(caches, mode: str) -> dict:
    """Policy name and bits per element of a live cache, for the stats."""
    return {"kv_policy": mode, "kv_bits_per_element": 16.0}


def cache_bytes(caches) -> int:
    return sum(c.nbytes for c in caches if hasattr(c, "nbytes"))


def fp16_bytes_for(shape, tokens: int) -> int:
    """What an fp16 cache would hold for `tokens` tokens, sliding windows included."""
    per_layer = 2 * shape.n_kv_heads * shape.head_dim * FP16_BYTES
    return sum(per_layer * (min(tokens, w) if w else tokens) for w in shape.windows)
