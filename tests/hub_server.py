"""A local stand-in for the Hugging Face Hub on 127.0.0.1, serving model folders from disk.

It answers what huggingface_hub and Folio ask: model info with file metadata
(/api/models/{repo}[/revision/{rev}]?blobs=true), search (/api/models?search=...),
and file resolution (/{repo}/resolve/{rev}/{file}) with HEAD (ETag, X-Repo-Commit, size)
and ranged GET. Like the real Hub, large (LFS) files answer with a redirect to a "CDN" on
another port, carrying X-Linked-Etag and X-Linked-Size; the CDN records whether it was sent
an Authorization header, which must never leave the Hub. Faults for tests: drop the connection after N bytes, serve a corrupted
file, throttle, or shut the whole server down mid-transfer.
"""

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

LFS_PATTERNS = (".safetensors", ".model")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class Repo:
    def __init__(self, repo_id: str, folder: Path, tags=("mlx", "4-bit"), downloads=100):
        self.repo_id, self.tags, self.downloads = repo_id, list(tags), downloads
        self.files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        self.commit = hashlib.sha1(repo_id.encode() + b"".join(self.files.values())).hexdigest()

    def lfs(self, name: str) -> bool:
        return name.endswith(LFS_PATTERNS) or len(self.files[name]) > 1_000_000

    def etag(self, name: str) -> str:
        data = self.files[name]
        return hashlib.sha256(data).hexdigest() if self.lfs(name) else git_blob_id(data)

    def sibling(self, name: str) -> dict:
        data = self.files[name]
        s = {"rfilename": name, "size": len(data), "blobId": git_blob_id(data)}
        if self.lfs(name):
            s["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
        return s

    def info(self, blobs: bool) -> dict:
        siblings = [self.sibling(n) if blobs else {"rfilename": n} for n in self.files]
        return {
            "_id": self.commit[:24], "id": self.repo_id, "modelId": self.repo_id, "author": self.repo_id.split("/")[0],
            "sha": self.commit, "lastModified": "2026-11-01T12:00:00.000Z", "private": False, "gated": False,
            "disabled": False, "downloads": self.downloads, "likes": 3, "library_name": "mlx", "tags": self.tags,
            "pipeline_tag": "text-generation", "siblings": siblings,
        }


class HubServer:
    """`with HubServer({"org/name": folder}) as hub:` then HF_ENDPOINT=hub.url."""

    def __init__(self, repos: dict, port: int = 0):
        self.repos = {rid: Repo(rid, Path(folder)) for rid, folder in repos.items()}
        self.requests = []  # (method, path, Range header)
        self.drop_after = {}  # file name -> bytes to send before dropping the connection, once
        self.die_after = {}  # file name -> bytes to send before the whole server goes away
        self.corrupt = set()  # file names served with one byte flipped
        self.throttle = 0.0  # seconds to sleep per 64 KiB sent
        self.stall = False  # accept requests but never answer
        self.dead = False  # set when die_after fires: every later connection is dropped unanswered
        self.cdn_auth = []  # for each CDN request: was an Authorization header sent?
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._cdn = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._servers = (self._server, self._cdn)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cdn_url = f"http://127.0.0.1:{self._cdn.server_address[1]}"
        self._threads = []
        self._stopping = threading.Lock()
        self._connections = set()

    def __enter__(self):
        for server in self._servers:
            server.daemon_threads = True
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        with self._stopping:  # the die_after thread and the test may both stop it; both wait for it
            if self._threads:
                self._threads = []
                for server in self._servers:
                    server.shutdown()
                    server.server_close()
                # A server that goes away takes its keep-alive connections with it.
                for conn in list(self._connections):
                    try:
                        conn.shutdown(2)
                    except OSError:
                        pass

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle(self):
                hub._connections.add(self.connection)
                try:
                    super().handle()
                except OSError:
                    pass
                finally:
                    hub._connections.discard(self.connection)

            def _json(self, obj, status=200):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _not_found(self, code="RepoNotFound"):
                body = json.dumps({"error": "Repository not found"}).encode()
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", "Repository not found")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _route(self, head: bool):
                url = urlparse(self.path)
                path = unquote(url.path)
                if hub.dead:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                hub.requests.append((self.command, path, self.headers.get("Range")))
                if hub.stall:
                    time.sleep(30)
                    return
                if path == "/api/models":
                    q = parse_qs(url.query)
                    text = q.get("search", [""])[0].lower()
                    limit = int(q.get("limit", ["50"])[0])
                    hits = [r.info(False) for r in hub.repos.values() if text in r.repo_id.lower()]
                    return self._json(hits[:limit])
                if path.startswith("/api/models/"):
                    rest = path[len("/api/models/"):].split("/")
                    repo = hub.repos.get("/".join(rest[:2]))
                    if repo is None:
                        return self._not_found()
                    return self._json(repo.info("blobs" in parse_qs(url.query)))
                parts = path.lstrip("/").split("/")
                if parts[0] == "cdn" and self.server is hub._cdn:
                    hub.cdn_auth.append(self.headers.get("Authorization") is not None)
                    repo = hub.repos.get("/".join(parts[1:3]))
                    name = "/".join(parts[3:])
                    if repo is None or name not in repo.files:
                        return self._not_found("EntryNotFound")
                    return self._file(repo, name, head)
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo = hub.repos.get("/".join(parts[:2]))
                    name = "/".join(parts[4:])
                    if repo is None:
                        return self._not_found()
                    if name not in repo.files:
                        return self._not_found("EntryNotFound")
                    if repo.lfs(name):
                        return self._redirect(repo, name)
                    return self._file(repo, name, head)
                self._not_found()

            def _redirect(self, repo, name):
                self.send_response(302)
                self.send_header("Location", f"{hub.cdn_url}/cdn/{repo.repo_id}/{name}")
                self.send_header("X-Linked-Etag", f'"{repo.etag(name)}"')
                self.send_header("X-Linked-Size", str(len(repo.files[name])))
                self.send_header("X-Repo-Commit", repo.commit)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _file(self, repo, name, head):
                data = repo.files[name]
                if name in hub.corrupt:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                start = 0
                rng = self.headers.get("Range")
                if rng and not head:
                    start = int(rng.split("=")[1].split("-")[0])
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{repo.etag(name)}"')
                self.send_header("X-Repo-Commit", repo.commit)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if head:
                    return
                body = data[start:]
                limit = hub.drop_after.pop(name, None)
                die = hub.die_after.pop(name, None)
                cut = limit if limit is not None else die
                sent = 0
                for i in range(0, len(body), 65536):
                    piece = body[i:i + 65536]
                    if cut is not None and sent + len(piece) >= cut:
                        self.wfile.write(piece[: max(0, cut - sent)])
                        self.wfile.flush()
                        if die is not None:
                            hub.dead = True
                            threading.Thread(target=hub.stop, daemon=True).start()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    self.wfile.write(piece)
                    sent += len(piece)
                    if hub.throttle:
                        time.sleep(hub.throttle)

            def do_GET(self):
                self._route(head=False)

            def do_HEAD(self):
                self._route(head=True)

        return Handler


def point_hub_at(monkeypatch, server: "HubServer"):
    """Let huggingface_hub and Folio talk to `server` only (the test session is otherwise offline)."""
    from huggingface_hub import constants

    from app.hub import download

    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(download, "RETRY_DELAYS", (0.01, 0.01))
