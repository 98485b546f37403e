"""Models this computer already has, for the toolbar's picker: the HF cache and imported folders.

Reads only file names on disk (never the network, never the loader): app.hub.installed checks
each folder with the engine's loader, which imports mlx, and the UI thread must not. The
worker validates a model fully when it loads it.
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

        from app.hub import download, net

        unfinished = {d["repo_id"] for d in download.pending()}
        cache = scan_cache_dir(net.hub_cache())
        for repo in cache.repos:
            if repo.repo_type != "model" or repo.repo_id in unfinished:
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
