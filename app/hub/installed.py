"""Models on this computer: repos in the Hugging Face cache and folders the user imported.

A cache repo counts as installed once refs/main points at a snapshot and no unfinished
download of it is pending. Removing a cache repo deletes its files; removing an imported
folder only forgets it, because the folder belongs to the user.
"""

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from app.engine.errors import FolioError
from app.hub import download, net
from app.hub.errors import HubError
from app.units import fmt


@dataclass
class Installed:
    name: str  # what to load: the repo id, or the folder's path for an imported model
    path: str
    source: str  # "hub" or "imported"
    size_bytes: int
    weights_bytes: int
    problem: str = ""  # why it cannot be loaded as it stands; empty when it can
    config: dict = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("name", "path", "source", "size_bytes", "weights_bytes", "problem")}


def _check(path: Path) -> tuple[dict, str]:
    """The folder's config and the loader's verdict on it, in the loader's own words."""
    from app.engine import loader

    try:
        return loader.validate(path), ""
    except FolioError as e:
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = {}
        return config if isinstance(config, dict) else {}, str(e)


def _weights(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("model*.safetensors") if f.exists())


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def hub_models() -> list[Installed]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(net.hub_cache())
    except CacheNotFound:
        return []
    unfinished = {d["repo_id"] for d in download.pending()}
    out = []
    for repo in info.repos:
        if repo.repo_type != "model" or repo.repo_id in unfinished or not repo.revisions:
            continue
        main = repo.refs.get("main")
        rev = main or max(repo.revisions, key=lambda r: r.last_modified)
        snapshot = Path(rev.snapshot_path)
        if not (snapshot / "config.json").exists():
            continue  # a tokenizer-only or dataset-like repo, not a model
        config, problem = _check(snapshot)
        if not main and not problem:
            problem = "Not downloaded by Folio and has no refs/main; download it again if it does not load."
        out.append(Installed(repo.repo_id, str(snapshot), "hub", repo.size_on_disk, _weights(snapshot), problem, config))
    return sorted(out, key=lambda m: m.name.lower())


def imported_models(settings=None) -> list[Installed]:
    from app.settings import Settings

    settings = settings or Settings()
    out = []
    for raw in settings.imported_models:
        path = Path(str(raw))
        if not path.is_dir():
            out.append(Installed(str(path), str(path), "imported", 0, 0, f"The folder {path} is gone (moved or deleted?)."))
            continue
        config, problem = _check(path)
        out.append(Installed(str(path), str(path), "imported", _folder_size(path), _weights(path), problem, config))
    return out


def list_models(settings=None) -> list[Installed]:
    return hub_models() + imported_models(settings)


def import_folder(folder, settings=None) -> Installed:
    """Check a local model folder the way the loader will, then remember it."""
    from app.engine import loader
    from app.settings import Settings

    path = Path(folder).expanduser()
    if not path.exists():
        raise HubError(f"There is no folder at {path}.")
    if not path.is_dir():
        raise HubError(f"{path} is a file; choose the folder holding config.json, the weights and the tokenizer.")
    path = path.resolve()
    config = loader.validate(path)
    settings = settings or Settings()
    known = [str(p) for p in settings.imported_models]
    if str(path) not in known:
        settings.set("imported_models", known + [str(path)])
    return Installed(str(path), str(path), "imported", _folder_size(path), _weights(path), "", config)


def remove(name: str, settings=None) -> str:
    """Delete a downloaded model, forget an imported one, or drop an unfinished download."""
    from app.settings import Settings

    root = net.hub_cache() / download.repo_folder(name)
    if name.count("/") == 1 and download.manifest_path(name).exists():
        download.cancel_pending(name)
        if not root.exists():
            return f"Cancelled the unfinished download of {name} and deleted its partial files."
    if name.count("/") == 1 and root.is_dir():
        size = _folder_size(root)
        shutil.rmtree(root)
        download.manifest_path(name).unlink(missing_ok=True)
        return f"Deleted {name} ({fmt(size)} freed)."
    settings = settings or Settings()
    known = [str(p) for p in settings.imported_models]
    target = str(Path(name).expanduser().resolve()) if Path(name).expanduser().exists() else name
    match = [p for p in known if p in (name, target) or Path(p).name == name]
    if len(match) == 1:
        settings.set("imported_models", [p for p in known if p != match[0]])
        return f"Forgot the imported model {match[0]}; the folder itself was left untouched."
    if len(match) > 1:
        raise HubError(f"Several imported models are called {name}; give the full path.")
    raise HubError(f"No installed model called {name}. See `folio models list`.")
