"""Per-turn statistics: one flat record, snake_case, the same for the CLI's JSON and the UI."""

from dataclasses import asdict, dataclass


@dataclass
class TurnStats:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    ttft_s: float = 0.0
    prefill_tps: float = 0.0
    decode_tps: float = 0.0
    peak_memory_bytes: int = 0
    active_memory_bytes: int = 0
    rss_bytes: int = 0
    kv_bytes: int = 0
    kv_bytes_fp16: int = 0
    kv_compression: float = 1.0
    kv_policy: str = "fp16"
    kv_bits_per_element: float = 16.0
    context_used: int = 0
    context_limit: int = 0
    backend: str = "cpu"
    attention_path: str = "mlx"
    finish_reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)
