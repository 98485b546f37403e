"""The curated catalog shipped in resources/catalog.json: MLX instruct models, smallest first.

Each entry carries the few config.json fields the fit estimate needs, so "will it fit?" is
answered before anything is downloaded, with no network at all.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from app.hub.errors import HubError

CATALOG_FILE = Path(__file__).resolve().parent.parent.parent / "resources" / "catalog.json"
REQUIRED = ("repo_id", "name", "parameters", "quantization", "download_bytes", "context_length", "license", "description", "config")


@dataclass(frozen=True)
class Entry:
    repo_id: str
    name: str
    parameters: str  # as people say it: "8B", "30B-A3B"
    quantization: str
    download_bytes: int  # approximate; the exact size comes from the Hub when downloading
    context_length: int
    license: str
    description: str
    config: dict = field(default_factory=dict, compare=False, hash=False)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in REQUIRED}


def load(path: Path | None = None) -> list[Entry]:
    path = path or CATALOG_FILE
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HubError(f"The model catalog {path} cannot be read ({e}).") from None
    entries = []
    for i, item in enumerate(raw.get("models", []) if isinstance(raw, dict) else []):
        missing = [k for k in REQUIRED if k not in item]
        if missing:
            raise HubError(f"Catalog entry {i + 1} in {path} lacks {', '.join(missing)}.")
        entries.append(Entry(**{k: item[k] for k in REQUIRED}))
    return sorted(entries, key=lambda e: e.download_bytes)


def find(repo_id: str, entries: list[Entry] | None = None) -> Entry | None:
    for e in entries if entries is not None else load():
        if e.repo_id.lower() == repo_id.lower():
            return e
    return None
