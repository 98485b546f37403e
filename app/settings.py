"""User preferences, declared once with typed defaults and kept as JSON in the data dir.

Like Picard's `Option` declarations: one table says every setting's name, type and default;
reading an unknown or malformed value falls back to the default instead of failing.
Window geometry is not here (the UI keeps it in QSettings); conversations are in the store.
"""

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from app import paths


@dataclass(frozen=True)
class Option:
    name: str
    type: type
    default: Any
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None

    def coerce(self, value):
        """The value as this option's type, or the default when it cannot be."""
        try:
            if self.type is bool and not isinstance(value, bool):
                raise TypeError
            value = self.type(value)
        except (TypeError, ValueError):
            return self.default
        if self.choices and value not in self.choices:
            return self.default
        if self.minimum is not None and value < self.minimum:
            return self.default
        if self.maximum is not None and value > self.maximum:
            return self.default
        return value


KV_MODES = ("auto", "int4", "int8", "fp16")

OPTIONS = {
    o.name: o
    for o in (
        Option("system_prompt", str, "You are a helpful assistant."),
        Option("temperature", float, 0.7, minimum=0.0, maximum=5.0),
        Option("top_p", float, 0.95, minimum=0.0, maximum=1.0),
        Option("min_p", float, 0.0, minimum=0.0, maximum=1.0),
        Option("repetition_penalty", float, 1.0, minimum=0.5, maximum=3.0),
        Option("max_tokens", int, 2048, minimum=1, maximum=1_000_000),
        # 0 means the model's own maximum.
        Option("context_length", int, 0, minimum=0, maximum=10_000_000),
        Option("kv_mode", str, "auto", choices=KV_MODES),
        Option("appearance", str, "system", choices=("system", "light", "dark")),
        Option("force_reference_attention", bool, False),
        Option("saved_cache_limit_gb", float, 20.0, minimum=0.0, maximum=10_000.0),
        Option("last_model", str, ""),
        Option("imported_models", list, []),
        Option("first_run_done", bool, False),
    )
}

# Per-conversation overrides may change only these.
CONVERSATION_OVERRIDES = ("system_prompt", "temperature", "top_p", "min_p", "repetition_penalty", "max_tokens")


class Settings:
    """Typed access to the preferences file: `s.temperature`, `s.set("temperature", 0.2)`."""

    def __init__(self, path=None):
        self.path = path or paths.settings_file()
        self._values = {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raw = {}
        if isinstance(raw, dict):
            for name, value in raw.items():
                if name in OPTIONS:
                    self._values[name] = OPTIONS[name].coerce(value)

    def __getattr__(self, name):
        if name.startswith("_") or name not in OPTIONS:
            raise AttributeError(name)
        return self._values.get(name, OPTIONS[name].default)

    def get(self, name):
        return getattr(self, name)

    def set(self, name, value):
        if name not in OPTIONS:
            raise KeyError(f"unknown setting {name!r}")
        self._values[name] = OPTIONS[name].coerce(value)
        self.save()

    def as_dict(self) -> dict:
        return {name: self.get(name) for name in OPTIONS}

    def save(self):
        # Write then rename, so a crash mid-write never leaves a half-written file.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".settings-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self._values, f, indent=2)
        os.replace(tmp, self.path)
