"""The live stats bar: model, state, speed, first-token time, context, memory, KV cache, backend."""

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

from app.units import fmt


def kv_summary(s: dict) -> str:
    """ "KV 1.2 MB · auto 6.4 bit · 2.5× smaller than fp16", or "KV 3.1 MB · fp16" without compression."""
    parts = [f"KV {fmt(s['kv_bytes'])}"]
    # The policy's full name carries its recipe ("auto (K 8b/g128+rot… V 4b/g64…)"): the tooltip has it.
    policy, bits = s.get("kv_policy", "").split(" (")[0], s.get("kv_bits_per_element")
    if policy:
        parts.append(f"{policy} {bits:.1f} bit" if bits and policy != "fp16" else policy)
    ratio = s.get("kv_compression", 1.0)
    if ratio > 1.05:
        parts.append(f"{ratio:.1f}× smaller than fp16")
    return " · ".join(parts)


class StatsBar(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("statsBar")
        self.setAccessibleName("Statistics")
        self.labels: dict[str, QLabel] = {}
        box = QHBoxLayout(self)
        box.setContentsMargins(12, 3, 12, 3)
        box.setSpacing(14)
        for key, tip in (
            ("model", "Model"),
            ("state", "What the engine is doing"),
            ("speed", "Decode speed"),
            ("ttft", "Time to first token"),
        ):
            box.addWidget(self._label(key, tip))
        self.context = QProgressBar()
        self.context.setObjectName("contextBar")
        self.context.setAccessibleName("Context used")
        self.context.setTextVisible(False)
        self.context.setFixedSize(70, 6)
        self.context.setRange(0, 1)
        self.context.setValue(0)
        box.addWidget(self.context)
        box.addWidget(self._label("context", "Context used against the limit"))
        box.addStretch(1)
        box.addWidget(self._label("message", "Last notice"))
        self._clear = QTimer(self, singleShot=True, timeout=lambda: self.labels["message"].clear())
        for key, tip in (
            ("memory", "Process RSS · MLX active · MLX peak"),
            ("kv", "KV cache: size, policy with its bits per element, and how much smaller than fp16"),
            ("backend", "MLX backend"),
        ):
            box.addWidget(self._label(key, tip))
        self.stats: dict = {}
        self.set_model("")
        self.set_state("idle")

    def _label(self, key: str, tip: str) -> QLabel:
        label = QLabel()
        label.setObjectName(f"stat_{key}")
        label.setToolTip(tip)
        label.setAccessibleName(tip)
        label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.labels[key] = label
        return label

    def flash(self, text: str, ms: int = 3000):
        """A passing notice ("Copied"), gone after `ms`."""
        self.labels["message"].setText(text)
        self._clear.start(ms)

    def text(self, key: str) -> str:
        return self.labels[key].text()

    def set_model(self, name: str):
        self.labels["model"].setText(name or "No model")

    def set_state(self, state: str, done: int = 0, total: int = 0):
        if state == "prefilling" and total:
            state = f"prefilling {100 * done / total:.0f}%"
        self.labels["state"].setText(state)

    def set_backend(self, backend: str):
        self.labels["backend"].setText(backend)

    def set_live(self, live: dict):
        """Numbers measured by the worker while it decodes."""
        if live.get("tps"):
            self.labels["speed"].setText(f"{live['tps']:.1f} tok/s")
        if live.get("ttft_s") is not None:
            self.labels["ttft"].setText(f"TTFT {live['ttft_s']:.2f} s")

    def set_stats(self, s: dict):
        """A finished turn's TurnStats.to_dict()."""
        self.stats = dict(s)
        if s.get("decode_tps"):
            self.labels["speed"].setText(f"{s['decode_tps']:.1f} tok/s")
        if s.get("ttft_s"):
            self.labels["ttft"].setText(f"TTFT {s['ttft_s']:.2f} s")
        used, limit = int(s.get("context_used", 0)), int(s.get("context_limit", 0))
        if limit:
            self.context.setRange(0, limit)
            self.context.setValue(min(used, limit))
            self.labels["context"].setText(f"{used:,} / {limit:,}")
        if s.get("rss_bytes") or s.get("active_memory_bytes"):
            self.labels["memory"].setText(
                f"RSS {fmt(s.get('rss_bytes', 0))} · MLX {fmt(s.get('active_memory_bytes', 0))}"
                f" · peak {fmt(s.get('peak_memory_bytes', 0))}"
            )
        if s.get("kv_bytes"):
            self.labels["kv"].setText(kv_summary(s))
            self.labels["kv"].setToolTip(f"KV cache policy: {s.get('kv_policy', '')}")
        if s.get("backend"):
            self.set_backend(s["backend"])
