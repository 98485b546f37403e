"""Models this computer already has: the Hugging Face cache and folders the user imported.

Reads only what is on disk (never the network), so the toolbar's picker fills instantly.
"""

from dataclasses import dataclass
from pathlib import Path

from app import log

logger = log.get("ui.models")


@dataclass(frozen=True)
class InstalledModel:
    name: str  # what the loader takes: a repo id or a folder path
    label: str
    size_bytes: int


def scan(imported=()) -> list[InstalledModel]:
    found = []
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir()
        for repo in cache.repos:
            if repo.repo_type != "model":
                continue
            # A model counts only once a snapshot holds its config and weights.
            complete = any(
                {f.file_name for f in rev.files} >= {"config.json"}
                and any(f.file_name.endswith(".safetensors") for f in rev.files)
                for rev in repo.revisions
            )
            if complete:
                found.append(InstalledModel(repo.repo_id, repo.repo_id, repo.size_on_disk))
    except Exception as e:  # no cache yet, or an unreadable one: the picker just shows fewer models
        logger.info("HF cache not scanned: %s", e)
    for folder in imported:
        path = Path(folder).expanduser()
        if (path / "config.json").exists():
            size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
            found.append(InstalledModel(str(path), path.name, size))
    return found
