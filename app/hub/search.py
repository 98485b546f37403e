"""Hub search for MLX models, only when the user asks; one request with a timeout, no retries.

huggingface_hub's list_models has no timeout and retries with backoff for half a minute when
offline, so the request is made here through its session and parsed by its ModelInfo.
"""

from dataclasses import dataclass
from fnmatch import fnmatch

from app.hub import net
from app.hub.errors import HubError


@dataclass
class Result:
    repo_id: str
    downloads: int
    likes: int
    last_modified: str
    pipeline_tag: str
    quantization: str
    gated: bool

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _quantization(tags: list[str]) -> str:
    for t in tags:
        if t.endswith("-bit") or t in ("4bit", "8bit"):
            return t
    return ""


def search(query: str, limit: int = 25) -> list[Result]:
    from huggingface_hub import ModelInfo
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    query = query.strip()
    net.ensure_online()
    params = {"search": query, "filter": "mlx", "sort": "downloads", "direction": -1, "limit": int(limit)}
    with net.talking_to_hub(f"searching for {query!r}"):
        r = get_session().get(f"{net.endpoint()}/api/models", params=params, headers=build_hf_headers(), timeout=net.timeout())
        hf_raise_for_status(r)
        items = r.json()
    out = []
    for item in items[:limit] if isinstance(items, list) else []:
        info = ModelInfo(**item)
        tags = info.tags or []
        out.append(Result(
            info.id, info.downloads or 0, info.likes or 0,
            info.last_modified.date().isoformat() if info.last_modified else "",
            info.pipeline_tag or "", _quantization(tags), bool(info.gated),
        ))
    return out


def details(repo_id: str) -> tuple[dict, int]:
    """(config.json, bytes of weights) of a Hub model, so a search result gets a fit estimate
    before anything is downloaded: two small requests (the file list with sizes, the config)."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    from app.hub.download import require_runnable

    net.ensure_online()
    with net.talking_to_hub(f"looking up {repo_id}", repo_id):
        info = net.api().model_info(repo_id, files_metadata=True, timeout=net.READ_TIMEOUT)
        siblings = info.siblings or []
        require_runnable(repo_id, {s.rfilename for s in siblings})
        weights = sum(s.size or 0 for s in siblings if fnmatch(s.rfilename, "model*.safetensors"))
        url = hf_hub_url(repo_id, "config.json", revision=info.sha, endpoint=net.endpoint())
        r = get_session().get(url, headers=build_hf_headers(), timeout=net.timeout())
        hf_raise_for_status(r)
    try:
        config = r.json()
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise HubError(f"{repo_id}'s config.json is not valid JSON; Folio cannot tell whether it fits.")
    return config, weights
