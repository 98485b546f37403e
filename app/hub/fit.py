"""Will a model fit here? Weights plus KV cache per mode at a context, from config.json alone.

The byte cost per mode comes from app.engine.kvcache, the one place that knows the cache
layouts; sliding-window layers stop growing at their window, so the KV size is summed per
layer rather than multiplied out. The engine is imported lazily: callers in the UI run this
off the UI thread, and the window never imports MLX itself.
"""

from dataclasses import asdict, dataclass, field

from app import log
from app.engine.errors import FolioError
from app.hub.errors import HubError
from app.units import tokens_label

logger = log.get("hub.fit")

MODES = ("fp16", "int4", "auto")
FITS, TIGHT, WONT_FIT = "fits", "tight", "won't fit"
# The int4 layout: uint32 words of eight 4-bit values plus an fp16 scale and bias per group of 64.
INT4_BITS = 4 + (16 + 16) / 64
# auto keeps some layers at int8 or fp16; 6.5 bits is its upper bound.
AUTO_MAX_BITS = 6.5
_FALLBACK_BITS = {"int4": INT4_BITS, "auto": AUTO_MAX_BITS}
_warned = set()


def text_config(config: dict) -> dict:
    """Multimodal configs keep the language model's fields under text_config."""
    inner = config.get("text_config")
    return {**config, **inner} if isinstance(inner, dict) else config


def _windows(c: dict, n_layers: int) -> list:
    window = c.get("sliding_window")
    types = c.get("layer_types")
    if isinstance(types, list) and len(types) == n_layers:
        # Other layer kinds (linear attention, SSM) keep a fixed-size state, not a growing KV cache.
        return [
            (int(window) if t == "sliding_attention" and window else None)
            for t in types
            if t in ("full_attention", "sliding_attention")
        ]
    pattern = c.get("sliding_window_pattern")
    if window and pattern:
        return [None if (i + 1) % int(pattern) == 0 else int(window) for i in range(n_layers)]
    return [None] * n_layers


def shape_from_config(config: dict):
    """The engine's ModelShape, read from config.json without loading any weights."""
    from app.engine.loader import ModelShape

    c = text_config(config)
    try:
        n_layers = int(c["num_hidden_layers"])
        heads = int(c["num_attention_heads"])
        kv_heads = int(c.get("num_key_value_heads") or heads)
        head_dim = int(c.get("head_dim") or int(c["hidden_size"]) // heads)
    except (KeyError, TypeError, ValueError) as e:
        raise HubError(f"config.json lacks what the fit estimate needs ({e}).") from None
    return ModelShape(
        n_layers=n_layers,
        n_kv_heads=kv_heads,
        head_dim=head_dim,
        windows=_windows(c, n_layers),
        attention_scale=None,
        max_context=int(c.get("max_position_embeddings") or 4096),
    )


def bytes_per_token(shape, mode: str) -> float:
    """Per-token KV bytes across all layers, as if no layer had a window."""
    from app.engine import kvcache

    try:
        return float(kvcache.bytes_per_token(shape, mode))
    except FolioError:
        if mode not in _FALLBACK_BITS:
            raise
        if mode not in _warned:
            _warned.add(mode)
            logger.warning("kvcache does not price %s yet; using its layout, %.1f bits per element", mode, _FALLBACK_BITS[mode])
        return kvcache.fp16_bytes_per_token(shape) * _FALLBACK_BITS[mode] / 16


def kv_bytes(shape, mode: str, tokens: int) -> float:
    from app.engine import kvcache

    ratio = bytes_per_token(shape, mode) / kvcache.fp16_bytes_per_token(shape)
    return kvcache.fp16_bytes_for(shape, tokens) * ratio


def machine() -> tuple[int, int]:
    """(physical memory, the budget MLX may use: Metal's recommended working set on a Mac)."""
    import psutil

    from app.engine import memory

    return int(psutil.virtual_memory().total), memory.budget_bytes()


@dataclass
class ModeFit:
    mode: str
    kv_bytes: int
    need_bytes: int
    verdict: str
    max_context: int  # the longest context that fits, capped at the model's own limit


@dataclass
class Fit:
    weights_bytes: int
    context: int
    model_max_context: int
    total_bytes: int
    budget_bytes: int
    usable_bytes: int
    modes: list = field(default_factory=list)

    def mode(self, name: str) -> ModeFit:
        return next(m for m in self.modes if m.mode == name)

    def summary(self) -> str:
        """What the int4 cache buys here, in one line: '128K context with int4, 16K with fp16'."""
        i4, f16 = self.mode("int4"), self.mode("fp16")
        if i4.max_context == 0:
            return "The weights alone do not fit in this computer's memory."
        return f"{tokens_label(i4.max_context)} context with int4, {tokens_label(f16.max_context)} with fp16"

    def as_dict(self) -> dict:
        return {**asdict(self), "summary": self.summary()}


def verdict(need: float, usable: int, total: int) -> str:
    if need <= usable:
        return FITS
    # Past the working set a Mac swaps and slows down badly, but it still runs.
    return TIGHT if need <= total else WONT_FIT


def _longest(shape, mode, weights_bytes, usable, cap) -> int:
    # KV bytes grow monotonically with tokens (windowed layers just stop growing), so bisect.
    if weights_bytes + kv_bytes(shape, mode, 1) > usable:
        return 0
    lo, hi = 1, cap
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if weights_bytes + kv_bytes(shape, mode, mid) <= usable:
            lo = mid
        else:
            hi = mid - 1
    return lo


def estimate(config: dict, weights_bytes: int, context: int | None = None, total: int | None = None,
             budget: int | None = None, modes=MODES) -> Fit:
    """Fit at `context` tokens (default: the model's maximum) for each KV mode."""
    from app.engine import memory

    shape = shape_from_config(config)
    if total is None or budget is None:
        t, b = machine()
        total, budget = total or t, budget or b
    usable = int(budget * (1 - memory.HEADROOM))
    context = int(context or shape.max_context)
    fit = Fit(int(weights_bytes), context, shape.max_context, int(total), int(budget), usable)
    for mode in modes:
        kv = kv_bytes(shape, mode, context)
        need = weights_bytes + kv
        fit.modes.append(ModeFit(
            mode, int(kv), int(need), verdict(need, usable, total),
            _longest(shape, mode, weights_bytes, usable, shape.max_context),
        ))
    return fit
