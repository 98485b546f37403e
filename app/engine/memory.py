"""How much memory MLX may use here, what a model needs, and the guard between them.

On a Mac the budget is the recommended GPU working set Metal reports (unified memory beyond
it swaps, and long prefills past it have panicked GPUs); elsewhere physical memory.
"""

import mlx.core as mx
import psutil

from app.engine.errors import OutOfMemory
from app.units import fmt

GiB = 1024**3
# Room kept for activations, the tokenizer, Python and the UI.
HEADROOM = 0.10


def backend() -> str:
    if mx.metal.is_available():
        return "metal"
    if hasattr(mx, "cuda") and mx.cuda.is_available():
        return "cuda"
    return "cpu"


def budget_bytes() -> int:
    info = mx.device_info()
    if "max_recommended_working_set_size" in info:
        return int(info["max_recommended_working_set_size"])
    if backend() == "cuda" and "memory_size" in info:
        return int(info["memory_size"])
    return int(psutil.virtual_memory().total)


def usable_bytes() -> int:
    return int(budget_bytes() * (1 - HEADROOM))


def apply_limits() -> int:
    """Cap MLX's allocations so a runaway prefill fails with an error, not swap or a GPU hang."""
    limit = usable_bytes()
    mx.set_memory_limit(limit)
    return limit


def rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def max_context(weights_bytes: int, kv_bytes_per_token: float, available: int | None = None) -> int:
    available = usable_bytes() if available is None else available
    room = available - weights_bytes
    return max(0, int(room // kv_bytes_per_token)) if kv_bytes_per_token > 0 else 0


def check_fit(weights_bytes: int, kv_bytes_per_token: float, context: int, mode: str, available: int | None = None):
    """Refuse with the numbers and the largest context that fits, before anything is allocated."""
    available = usable_bytes() if available is None else available
    need = weights_bytes + kv_bytes_per_token * context
    if need <= available:
        return
    if weights_bytes > available:
        raise OutOfMemory(
            f"This model needs {fmt(weights_bytes)} for its weights alone, more than the "
            f"{fmt(available)} this computer can give it. Choose a smaller or more quantized model."
        )
    fits = max_context(weights_bytes, kv_bytes_per_token, available)
    raise OutOfMemory(
        f"A {context:,}-token context needs {fmt(need)} ({fmt(weights_bytes)} weights + "
        f"{fmt(kv_bytes_per_token * context)} KV cache in {mode}), more than the {fmt(available)} "
        f"available. The largest context that fits in {mode} is {fits:,} tokens."
    )
