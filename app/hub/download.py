"""Downloads a model repo into the Hugging Face cache: resumable, verified, installed only when whole.

The layout is huggingface_hub's own (blobs/<etag>, snapshots/<commit>/<file>, refs/main), so
mlx-lm and `hf` see the same files. A file is written to blobs/<etag>.incomplete, resumed with
a ranged GET, checked against the Hub's size and hash (the LFS sha256, or the git blob id for
small files), and only then renamed into place; the snapshot links and refs/main are written
after every file passed, so a half-finished download never looks installed. A small manifest
in Folio's data dir remembers unfinished downloads across restarts.
"""

import errno
import hashlib
import json
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from fnmatch import fnmatch
from pathlib import Path

from app import log, paths
from app.hub import net
from app.hub.errors import DiskFull, DownloadCancelled, HubError, IntegrityError, Offline, Paused
from app.units import fmt

logger = log.get("hub.download")

# What mlx-lm itself fetches for a model (mlx_lm.utils); READMEs, images and PyTorch weights stay behind.
ALLOW = ("*.json", "model*.safetensors", "*.py", "tokenizer.model", "*.tiktoken", "tiktoken.model", "*.txt", "*.jsonl", "*.jinja")
CHUNK = 1 << 20
# A dropped connection is retried after these pauses, each time resuming where it stopped.
RETRY_DELAYS = (1.0, 3.0)
# Room left on the disk after the download, so the system is never starved.
DISK_HEADROOM = 100 * 1024**2
# Repos being downloaded in this process: two writers on one .incomplete file would corrupt it.
_active, _active_lock = set(), threading.Lock()


@dataclass
class RemoteFile:
    name: str
    size: int
    etag: str  # the blob's name in the cache, as huggingface_hub names it
    algo: str  # "sha256" (LFS) or "git-sha1" (small files kept in git)
    digest: str
    url: str


@dataclass
class Plan:
    repo_id: str
    commit: str
    files: list

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass
class Progress:
    repo_id: str
    done_bytes: int
    total_bytes: int
    speed_bps: float
    eta_s: float | None
    file: str

    @property
    def fraction(self) -> float:
        return self.done_bytes / self.total_bytes if self.total_bytes else 1.0

    def as_dict(self) -> dict:
        return {**asdict(self), "fraction": self.fraction}


class Control:
    """Pause and cancel, set from any thread and honoured between chunks."""

    def __init__(self):
        self._pause, self._cancel = threading.Event(), threading.Event()

    def pause(self):
        self._pause.set()

    def cancel(self):
        self._cancel.set()

    def check(self, repo_id: str):
        if self._cancel.is_set():
            raise DownloadCancelled(repo_id)
        if self._pause.is_set():
            raise Paused(repo_id)

    def sleep(self, seconds: float, repo_id: str):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.check(repo_id)
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))


class Meter:
    """Bytes, speed over the last few seconds, and ETA; reports at most five times a second."""

    WINDOW = 5.0

    def __init__(self, repo_id, total, done, on_progress):
        self.repo_id, self.total, self.done, self.on_progress = repo_id, total, done, on_progress
        self.samples = [(time.monotonic(), done)]
        self.last_report = 0.0
        self.file = ""

    def add(self, n: int, force: bool = False):
        self.done += n
        now = time.monotonic()
        self.samples.append((now, self.done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.WINDOW:
            self.samples.pop(0)
        if self.on_progress and (force or now - self.last_report >= 0.2):
            self.last_report = now
            self.on_progress(self.progress())

    def progress(self) -> Progress:
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        speed = (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0
        left = self.total - self.done
        eta = left / speed if speed > 0 else (0.0 if left <= 0 else None)
        return Progress(self.repo_id, self.done, self.total, speed, eta, self.file)


def repo_folder(repo_id: str) -> str:
    return "models--" + repo_id.replace("/", "--")


def wanted(name: str) -> bool:
    return any(fnmatch(name, p) for p in ALLOW)


def manifest_path(repo_id: str) -> Path:
    return paths.data_dir() / "downloads" / f"{repo_folder(repo_id)}.json"


def _save_manifest(plan: Plan, state: str, error: str = ""):
    path = manifest_path(plan.repo_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"repo_id": plan.repo_id, "commit": plan.commit, "state": state, "error": error,
            "files": [asdict(f) for f in plan.files]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _load_manifest(repo_id: str) -> dict | None:
    try:
        return json.loads(manifest_path(repo_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def pending() -> list[dict]:
    """Unfinished downloads (paused, failed, or cut short by quitting), with bytes done so far."""
    folder = paths.data_dir() / "downloads"
    out = []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            files = [RemoteFile(**f) for f in data["files"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        blobs = net.hub_cache() / repo_folder(data["repo_id"]) / "blobs"
        out.append({
            "repo_id": data["repo_id"], "state": data.get("state", "paused"), "error": data.get("error", ""),
            "done_bytes": sum(_have(blobs, f) for f in files), "total_bytes": sum(f.size for f in files),
        })
    return out


def _have(blobs: Path, f: RemoteFile) -> int:
    if (blobs / f.etag).exists():
        return f.size
    part = blobs / f"{f.etag}.incomplete"
    return min(part.stat().st_size, f.size) if part.exists() else 0


def require_runnable(repo_id: str, names) -> None:
    """Refuse a repository without the files an MLX model folder needs, before any download."""
    if "config.json" not in names or not any(fnmatch(n, "model*.safetensors") for n in names):
        raise HubError(f"{repo_id} is not a model Folio can run: it has no config.json and model*.safetensors (MLX format).")


def plan(repo_id: str) -> Plan:
    """Ask the Hub which files the model has, their sizes, hashes and where to fetch them."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    net.ensure_online()
    with net.talking_to_hub(f"looking up {repo_id}", repo_id):
        info = net.api().model_info(repo_id, files_metadata=True, timeout=net.READ_TIMEOUT)
    siblings = [s for s in info.siblings or [] if wanted(s.rfilename)]
    require_runnable(repo_id, {s.rfilename for s in siblings})
    files = []
    for s in siblings:
        url = hf_hub_url(repo_id, s.rfilename, revision=info.sha, endpoint=net.endpoint())
        with net.talking_to_hub(f"resolving {s.rfilename}", repo_id):
            meta = get_hf_file_metadata(url, timeout=net.READ_TIMEOUT, endpoint=net.endpoint())
        size = s.size if s.size is not None else meta.size
        if size is None or (meta.size is not None and meta.size != size):
            raise IntegrityError(f"The Hub gives two different sizes for {s.rfilename} in {repo_id}; try again later.")
        algo, digest = ("sha256", s.lfs.sha256) if s.lfs else ("git-sha1", s.blob_id or meta.etag)
        files.append(RemoteFile(s.rfilename, int(size), meta.etag or digest, algo, digest, meta.location or url))
    return Plan(repo_id, info.sha, files)


def _hasher(f: RemoteFile):
    if f.algo == "sha256":
        return hashlib.sha256()
    h = hashlib.sha1()  # a git blob id is sha1("blob <size>\0" + content)
    h.update(f"blob {f.size}\0".encode())
    return h


def free_bytes(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def _check_disk(need: int, where: Path):
    free = free_bytes(where)
    if need + DISK_HEADROOM > free:
        raise DiskFull(
            f"Not enough disk space: the download needs {fmt(need)} more, but only {fmt(free)} is free "
            f"where models are kept ({where}). Free some space and try again."
        )


def _append(out, chunk: bytes):
    out.write(chunk)


def _stream(f: RemoteFile, part: Path, have: int, hasher, meter: Meter, control: Control, repo_id: str):
    """One GET from byte `have` on, appended to `part`; returns how far it got."""
    from huggingface_hub.utils import build_hf_headers, get_session

    headers = build_hf_headers()
    if _origin(f.url) != _origin(net.endpoint()):
        # Large files come from a CDN with a signed URL; the user's token must not leave the Hub.
        headers.pop("authorization", None)
        headers.pop("Authorization", None)
    if have:
        headers["Range"] = f"bytes={have}-"
    with get_session().stream("GET", f.url, headers=headers, timeout=net.timeout()) as r:
        if r.status_code == 200 and have:
            # The server ignored the range: start the file over.
            meter.add(-have)
            have, hasher = 0, _hasher(f)
            part.unlink()
        elif r.status_code not in (200, 206):
            raise HubError(f"The Hub answered {r.status_code} for {f.name} of {repo_id}; try again later.")
        with open(part, "ab") as out:
            for chunk in r.iter_bytes():
                control.check(repo_id)
                _append(out, chunk)
                hasher.update(chunk)
                have += len(chunk)
                meter.add(len(chunk))
                if have > f.size:
                    break
    return have, hasher


def _origin(url: str) -> tuple:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def _resume_point(f: RemoteFile, part: Path):
    """How much of `part` is already there, and the hash of those bytes, read back from disk."""
    hasher = _hasher(f)
    if part.exists() and part.stat().st_size > f.size:
        part.unlink()
    have = part.stat().st_size if part.exists() else 0
    if have:
        with open(part, "rb") as src:
            for block in iter(lambda: src.read(CHUNK), b""):
                hasher.update(block)
    return have, hasher


def _fetch(f: RemoteFile, blobs: Path, meter: Meter, control: Control, repo_id: str):
    import httpx2

    part = blobs / f"{f.etag}.incomplete"
    have, hasher = _resume_point(f, part)
    meter.file = f.name
    retries = 0
    while have < f.size:
        control.check(repo_id)
        before = have
        try:
            have, hasher = _stream(f, part, have, hasher, meter, control, repo_id)
        except (httpx2.TransportError, ConnectionError) as e:
            reason = type(e).__name__
            # What reached the disk is the truth; the hash is rebuilt from it.
            have, hasher = _resume_point(f, part)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(
                    f"The disk filled up while downloading {f.name} of {repo_id}. Free some space and resume; "
                    "what was downloaded so far is kept."
                ) from None
            raise HubError(f"Could not write {part}: {e.strerror or e}.") from None
        else:
            if have >= f.size:
                break
            reason = "the response ended early"
        if have > before:
            retries = 0  # it moved forward: a flaky connection, not a dead one
        if retries >= len(RETRY_DELAYS):
            host = f.url.split("://")[-1].split("/")[0]
            raise Offline(
                f"Lost the connection to {host} while downloading {f.name} of {repo_id} "
                f"({fmt(meter.done)} of {fmt(meter.total)} done). Resume the download to continue from there."
            )
        logger.info("download of %s interrupted (%s); retrying from byte %d", f.name, reason, have)
        control.sleep(RETRY_DELAYS[retries], repo_id)
        retries += 1
    if have != f.size or hasher.hexdigest() != f.digest:
        part.unlink(missing_ok=True)
        meter.add(-have, force=True)
        what = "size" if have != f.size else f.algo
        raise IntegrityError(
            f"{f.name} of {repo_id} failed its integrity check ({what} does not match the Hub's); the damaged "
            "copy was deleted. Download again to fetch it afresh."
        )
    os.replace(part, blobs / f.etag)


def _install(root: Path, plan: Plan) -> Path:
    snapshot = root / "snapshots" / plan.commit
    for f in plan.files:
        link = snapshot / f.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(os.path.relpath(root / "blobs" / f.etag, link.parent), link)
    refs = root / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    # refs/main last: only now do mlx-lm and huggingface_hub consider the model present.
    (refs / "main").write_text(plan.commit)
    return snapshot


def _discard(root: Path, plan: Plan):
    """Drop this download's partial and unreferenced files; an earlier installed revision stays."""
    blobs = root / "blobs"
    linked = {p.resolve().name for p in (root / "snapshots").rglob("*") if p.is_symlink()} if (root / "snapshots").exists() else set()
    for f in plan.files:
        (blobs / f"{f.etag}.incomplete").unlink(missing_ok=True)
        if f.etag not in linked:
            (blobs / f.etag).unlink(missing_ok=True)
    if not linked:
        shutil.rmtree(root, ignore_errors=True)
    manifest_path(plan.repo_id).unlink(missing_ok=True)


def pull(repo_id: str, on_progress=None, control: Control | None = None) -> Path:
    """Download (or resume) `repo_id`; return its snapshot folder once every file is verified."""
    with _active_lock:
        if repo_id in _active:
            raise HubError(f"{repo_id} is already downloading.")
        _active.add(repo_id)
    try:
        return _pull(repo_id, on_progress, control or Control())
    finally:
        with _active_lock:
            _active.discard(repo_id)


def _pull(repo_id: str, on_progress, control: Control) -> Path:
    p = plan(repo_id)
    root = net.hub_cache() / repo_folder(repo_id)
    blobs = root / "blobs"
    old = _load_manifest(repo_id)
    if old and old.get("commit") != p.commit:
        # The repo changed since the last attempt: partial files of the old revision are useless.
        keep = {f.etag for f in p.files}
        for f in old.get("files", []):
            if f.get("etag") not in keep:
                (blobs / f"{f.get('etag')}.incomplete").unlink(missing_ok=True)
    blobs.mkdir(parents=True, exist_ok=True)
    done = sum(_have(blobs, f) for f in p.files)
    _check_disk(p.total_bytes - done, net.hub_cache())
    _save_manifest(p, "downloading")
    meter = Meter(repo_id, p.total_bytes, done, on_progress)
    try:
        for f in p.files:
            if not (blobs / f.etag).exists():
                _fetch(f, blobs, meter, control, repo_id)
    except DownloadCancelled:
        _discard(root, p)
        raise
    except Paused:
        _save_manifest(p, "paused")
        raise
    except HubError as e:
        _save_manifest(p, "failed", str(e))
        raise
    snapshot = _install(root, p)
    manifest_path(repo_id).unlink(missing_ok=True)
    meter.add(0, force=True)
    logger.info("installed %s (%s) at %s", repo_id, fmt(p.total_bytes), snapshot)
    return snapshot


def cancel_pending(repo_id: str):
    """Forget an unfinished download and delete its partial files."""
    data = _load_manifest(repo_id)
    if data is None:
        raise HubError(f"There is no unfinished download of {repo_id}.")
    p = Plan(repo_id, data["commit"], [RemoteFile(**f) for f in data["files"]])
    _discard(net.hub_cache() / repo_folder(repo_id), p)
