"""Saved KV caches: a conversation's compressed cache on disk, so reopening it is a read, not a prefill.

Each conversation has at most one saved cache in app.paths.kv_cache_dir(): the cache itself
(written by the engine's `kvcache.save_cache`), the token ids it holds, and a line in
index.json with the model, KV policy, size and last use. The folder is kept under the
`saved_cache_limit_gb` setting by evicting the least recently used. A saved cache is only
ever a shortcut: when the model or the KV policy changed, or a file is damaged, it is
ignored and the conversation is prefilled as if it had none. Use from the engine's thread.
"""

import hashlib
import json
import os
import sys
import tempfile
import time
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path

from app import log, paths
from app.engine.errors import FolioError

logger = log.get("saved_caches")

INDEX = "index.json"
GB = 1024**3
# Below this much free space a failed write is taken to be a full disk (mlx does not say why).
LOW_DISK_BYTES = 256 * 1024**2


class SavedCacheError(FolioError):
    """A cache could not be saved; the conversation itself is unaffected."""


@dataclass
class Entry:
    conversation_id: int
    model_key: str
    policy: str
    tokens: int
    bytes: int
    last_used: float


def model_key(loaded) -> str:
    """The model's id plus a fingerprint of its config and weight files: a changed model is a new key."""
    h = hashlib.sha256(json.dumps(loaded.config, sort_keys=True, default=str).encode())
    for f in sorted(Path(loaded.path).glob("*.safetensors")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return f"{loaded.model_id}@{h.hexdigest()[:16]}"


def policy_key(mode: str, caches) -> str:
    """The KV mode plus the layout it gave each layer (kind, bits, groups, window): what a cache must match."""
    layers = []
    for c in caches:
        spec = getattr(c, "spec", None)
        layers.append([type(c).__name__, spec.to_dict() if hasattr(spec, "to_dict") else None,
                       getattr(c, "window", None) or getattr(c, "max_size", None)])
    digest = hashlib.sha256(json.dumps(layers, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{mode}:{digest}"


class SavedCaches:
    def __init__(self, folder=None, limit_gb: float | None = None):
        self.folder = Path(folder) if folder else paths.kv_cache_dir()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._limit_gb = limit_gb  # None: follow the setting, read again at each save
        self.entries = self._read_index()

    @property
    def limit_bytes(self) -> int:
        limit_gb = self._limit_gb
        if limit_gb is None:
            from app.settings import Settings

            limit_gb = Settings().saved_cache_limit_gb
        return int(limit_gb * GB)

    # -- paths ------------------------------------------------------------
    def cache_path(self, conv_id) -> Path:
        return self.folder / f"conv-{int(conv_id)}.safetensors"

    def tokens_path(self, conv_id) -> Path:
        return self.folder / f"conv-{int(conv_id)}.tokens"

    # -- save / load ------------------------------------------------------
    def save(self, conv_id, caches, tokens, *, model_id: str, policy: str) -> bool:
        """Write the conversation's cache; False when it is larger than the whole limit (or saving is off).

        Written beside the old files and renamed over them, so a failure (a full disk) leaves the
        previous saved cache, which is still a valid prefix of the conversation, in place.
        """
        limit = self.limit_bytes
        if limit <= 0 or not caches or not tokens:
            return False
        if caches[0].offset != len(tokens):
            raise SavedCacheError(f"Cache holds {caches[0].offset} tokens but {len(tokens)} token ids were given.")
        tmp_cache = self.folder / f".tmp-{os.getpid()}-conv-{int(conv_id)}.safetensors"
        tmp_tokens = self.folder / f".tmp-{os.getpid()}-conv-{int(conv_id)}.tokens"
        try:
            _save_cache(caches, tmp_cache, model_id=model_id, policy=policy)
            ids = array("I", tokens)
            if sys.byteorder != "little":
                ids.byteswap()
            _write_synced(tmp_tokens, ids.tobytes())
            size = _size(tmp_cache) + _size(tmp_tokens)
            if size > limit:
                logger.info("cache of conversation %s (%d bytes) is over the %d-byte limit; not kept",
                            conv_id, size, limit)
                _remove(tmp_cache, tmp_tokens)
                return False
            os.replace(tmp_cache, self.cache_path(conv_id))
            os.replace(tmp_tokens, self.tokens_path(conv_id))
        except (OSError, RuntimeError) as e:  # mlx reports a failed write as RuntimeError
            _remove(tmp_tokens, *self.folder.glob(f"{tmp_cache.name}*"))
            raise SavedCacheError(_why(e, self.folder)) from None
        self.entries[int(conv_id)] = Entry(int(conv_id), model_id, policy, len(tokens), size, time.time())
        self._evict(keep=int(conv_id))
        try:
            self._write_index()
        except OSError as e:
            raise SavedCacheError(_why(e, self.folder)) from None
        return True

    def load(self, conv_id, *, model_id: str, policy: str):
        """(caches, token ids) for the conversation, or None when there is no usable saved cache."""
        entry = self.entries.get(int(conv_id))
        if entry is None:
            return None
        if entry.model_key != model_id or entry.policy != policy:
            logger.info("saved cache of conversation %s ignored: saved for %s/%s, now %s/%s",
                        conv_id, entry.model_key, entry.policy, model_id, policy)
            return None
        try:
            caches, count = _load_cache(self.cache_path(conv_id), model_id=model_id, policy=policy)
            _read_now(caches)
            raw = array("I")
            raw.frombytes(self.tokens_path(conv_id).read_bytes())
            if sys.byteorder != "little":
                raw.byteswap()
            tokens = raw.tolist()
            if count != len(tokens):
                raise ValueError(f"cache holds {count} tokens, token file {len(tokens)}")
        except Exception as e:  # any damaged or foreign file just means: prefill instead
            logger.warning("saved cache of conversation %s unusable (%s); discarding it", conv_id, e)
            self.discard(conv_id)
            return None
        entry.last_used = time.time()
        try:
            self._write_index()
        except OSError as e:
            logger.warning("could not update %s: %s", INDEX, e)
        return caches, tokens

    def restore(self, session, conv_id) -> int:
        """Put the conversation's saved cache into a ChatSession; returns the tokens restored (0: none)."""
        from app.engine import kvcache

        # A fresh cache says what this model and mode build today (and sets up the attention
        # route compressed caches need); the saved one must have been built the same way.
        fresh = kvcache.make_cache(session.loaded, session.kv_mode)
        got = self.load(conv_id, model_id=model_key(session.loaded), policy=policy_key(session.kv_mode, fresh))
        if got is None:
            return 0
        session.cache, session.cache_tokens = got
        return len(session.cache_tokens)

    def save_session(self, session, conv_id) -> bool:
        """After a turn: save the session's cache for the conversation."""
        if not session.cache:
            return False
        return self.save(conv_id, session.cache, session.cache_tokens,
                         model_id=model_key(session.loaded), policy=policy_key(session.kv_mode, session.cache))

    # -- housekeeping -----------------------------------------------------
    def discard(self, conv_id):
        self.entries.pop(int(conv_id), None)
        _remove(self.cache_path(conv_id), self.tokens_path(conv_id))
        try:
            self._write_index()
        except OSError as e:
            logger.warning("could not update %s: %s", INDEX, e)

    def keep_only(self, conv_ids):
        """Drop saved caches of conversations that no longer exist."""
        alive = {int(c) for c in conv_ids}
        for conv_id in [c for c in self.entries if c not in alive]:
            self.discard(conv_id)

    def total_bytes(self) -> int:
        return sum(e.bytes for e in self.entries.values())

    def _evict(self, keep: int):
        limit = self.limit_bytes
        for e in sorted(self.entries.values(), key=lambda e: e.last_used):
            if self.total_bytes() <= limit:
                break
            if e.conversation_id != keep:
                logger.info("evicting saved cache of conversation %s (%d bytes, least recently used)",
                            e.conversation_id, e.bytes)
                self.entries.pop(e.conversation_id)
                _remove(self.cache_path(e.conversation_id), self.tokens_path(e.conversation_id))

    def _read_index(self) -> dict[int, Entry]:
        path = self.folder / INDEX
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
            entries = {int(r["conversation_id"]): Entry(**r) for r in rows}
        except FileNotFoundError:
            entries = {}
        except (OSError, ValueError, TypeError, KeyError) as e:
            logger.warning("%s unreadable (%s); starting an empty index", path, e)
            entries = {}
        # Files are the truth: an entry without its files is gone, a file without an entry is debris.
        entries = {c: e for c, e in entries.items() if self.cache_path(c).exists() and self.tokens_path(c).exists()}
        named = {self.cache_path(c).name for c in entries} | {self.tokens_path(c).name for c in entries}
        for f in self.folder.iterdir():
            if f.name != INDEX and f.name not in named and (f.name.startswith(("conv-", ".tmp-"))):
                _remove(f)
        return entries

    def _write_index(self):
        rows = [asdict(e) for e in self.entries.values()]
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".index-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(rows, f)
            os.replace(tmp, self.folder / INDEX)
        except OSError:
            _remove(Path(tmp))
            raise


# -- the engine's save/restore ---------------------------------------------------------
def _save_cache(caches, path: Path, *, model_id: str, policy: str):
    from app.engine import kvcache

    kvcache.save_cache(caches, path, model_id=model_id, policy=policy)


def _load_cache(path: Path, *, model_id: str, policy: str):
    from app.engine import kvcache

    return kvcache.load_cache(path, model_id=model_id, policy=policy)


def _read_now(caches):
    """mx.load is lazy: read (and so check) the file here, not during the first prefill."""
    import mlx.core as mx

    mx.eval([c.state for c in caches if not (hasattr(c, "empty") and c.empty())])


def _write_synced(path: Path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _remove(*files: Path):
    for f in files:
        try:
            if f.is_dir():
                import shutil

                shutil.rmtree(f)
            else:
                f.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            logger.warning("could not remove %s: %s", f, e)


def _why(e: Exception, folder: Path) -> str:
    import errno
    import shutil

    try:
        low = shutil.disk_usage(folder).free < LOW_DISK_BYTES
    except OSError:
        low = False
    if getattr(e, "errno", None) == errno.ENOSPC or low:
        return ("Could not save this conversation's cache: the disk is full. The conversation itself is "
                "saved; reopening it will re-read the context instead.")
    return f"Could not save this conversation's cache ({e}). The conversation itself is saved."
