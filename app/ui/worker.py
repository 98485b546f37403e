"""The engine worker: one long-lived QThread that owns every MLX call, behind queued signals.

Like GPT4All's ChatLLM: the UI never touches the model; it queues requests (load, generate,
forget) and hears back through signals. The engine is imported inside the thread, so the UI
process imports mlx only there and no MLX array is ever created on the UI thread.
"""

import gc
import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal, Slot

from app import log

logger = log.get("ui.worker")

# Text goes to the UI at most ~30 times a second: each emit re-lays out one message.
FLUSH_S = 1 / 30
# Conversations whose KV cache stays in memory; older ones prefill again when reopened.
MAX_SESSIONS = 4


@dataclass
class Job:
    """One answer to generate. `params` holds GenParams fields; plain data only."""

    id: int
    conversation_id: int
    messages: list
    params: dict = field(default_factory=dict)
    kv_mode: str = "auto"
    context_limit: int = 0


@dataclass
class Prepare:
    """Documents to read and plan into the last user message of `messages` before a turn is sent.

    `documents` holds paths (new attachments) or dicts {name, kind, text, sha256} (stored ones)."""

    id: int
    conversation_id: int
    messages: list
    documents: list
    kv_mode: str = "auto"
    context_limit: int = 0


class _Worker(QObject):
    """Lives in the engine thread; its slots run there one at a time, in order."""

    loading = Signal(str)
    loadProgress = Signal(str, float)  # model, fraction of the weights read
    loaded = Signal(dict)
    loadFailed = Signal(str, str)
    started = Signal(int)
    progress = Signal(int, int, int)  # job, tokens prefilled, prompt tokens
    text = Signal(int, str)  # job, text since the previous emit
    live = Signal(int, dict)  # job, {"pieces", "tps", "ttft_s"} while decoding
    finished = Signal(int, str, dict)  # job, whole answer, TurnStats.to_dict()
    failed = Signal(int, str)  # job, reason for the user
    notice = Signal(str)
    documentProgress = Signal(str, int, int)  # path, pages read, pages
    documentsInspected = Signal(list)  # one dict per attached path, from app.documents.inspect
    prepared = Signal(int, dict)  # request, the plan: what to store and what the model will read
    prepareFailed = Signal(int, str)  # request, reason ("" when it was cancelled)
    modelsListed = Signal(list)  # app.hub.installed.Installed.as_dict() per model on this computer

    def __init__(self, cancelled: set, flags: dict):
        super().__init__()
        self._cancelled = cancelled
        self._flags = flags
        self._model = None
        self._sessions: OrderedDict = OrderedDict()
        self._documents: dict = {}  # path -> Document, so re-planning does not re-read files
        self._prefill_tps: dict = {}  # (model, KV mode) -> measured tokens/s
        self._saved = None  # app.saved_caches.SavedCaches, made in this thread on first use

    def _stopping(self, job_id: int) -> bool:
        return self._flags.get("quitting", False) or job_id in self._cancelled

    @Slot(str)
    def load(self, name: str):
        from app.engine import loader, memory
        from app.engine.errors import FolioError

        self.loading.emit(name)
        # Drop the old model before loading the new one: both may not fit at once.
        self._sessions.clear()
        self._model = None
        try:
            loaded = loader.load(name, on_progress=lambda f: self.loadProgress.emit(name, f))
        except FolioError as e:
            self.loadFailed.emit(name, str(e))
            return
        except Exception as e:  # the app keeps running whatever the loader raises
            logger.exception("loading %s failed", name)
            self.loadFailed.emit(name, f"Could not load {name}: {e}")
            return
        self._model = loaded
        # The model, tokenizer and libraries are long-lived: keep them out of the cyclic collector,
        # whose full passes over them (tens of ms, GIL held) would stall the UI thread mid-answer.
        gc.freeze()
        self.loaded.emit({
            "name": name,
            "model_id": loaded.model_id,
            "path": str(loaded.path),
            "weights_bytes": loaded.weights_bytes,
            "load_seconds": loaded.load_seconds,
            "max_context": loaded.shape.max_context,
            "backend": memory.backend(),
        })

    @Slot(int)
    def forget(self, conversation_id: int):
        self._sessions.pop(conversation_id, None)
        self._saved_caches().discard(conversation_id)  # the conversation was deleted: so is its cache

    def _kv_mode(self, wanted: str) -> str:
        from app.engine import kvcache
        from app.engine.errors import FolioError

        try:
            kvcache.bytes_per_token(self._model.shape, wanted)
            return wanted
        except FolioError:
            self.notice.emit(f"KV mode {wanted} is not available in this build; using fp16.")
            return "fp16"

    def _session(self, job: Job):
        from app.engine.session import ChatSession

        mode = self._kv_mode(job.kv_mode)
        limit = job.context_limit or None
        session = self._sessions.pop(job.conversation_id, None)
        if session is None or session.loaded is not self._model or session.kv_mode != mode or (
            session.context_limit != min(limit or 1 << 62, self._model.shape.max_context)
        ):
            session = ChatSession(self._model, kv_mode=mode, context_limit=limit)
            self._restore_saved(session, job.conversation_id)
        self._sessions[job.conversation_id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    @Slot(object)
    def generate(self, job: Job):
        from app.engine.errors import Cancelled, FolioError
        from app.engine.session import GenParams

        pieces: list[str] = []
        try:
            if self._stopping(job.id):
                self.finished.emit(job.id, "", {"finish_reason": "cancelled"})
                return
            if self._model is None:
                self.failed.emit(job.id, "No model is loaded. Choose one in the toolbar (⌘L).")
                return
            self.started.emit(job.id)
            session = self._session(job)
            params = GenParams(**job.params)
            pending: list[str] = []
            t0 = last = time.perf_counter()
            t_first = None
            stream = session.generate(
                job.messages, params,
                on_progress=lambda done, total: self.progress.emit(job.id, done, total),
                should_stop=lambda: self._stopping(job.id),
            )
            for piece in stream:
                now = time.perf_counter()
                if t_first is None:
                    t_first = now
                pieces.append(piece)
                pending.append(piece)
                if now - last >= FLUSH_S:
                    last = now
                    self._flush(job.id, pending, len(pieces), t0, t_first, now)
            if pending:
                self._flush(job.id, pending, len(pieces), t0, t_first, time.perf_counter())
            self.finished.emit(job.id, "".join(pieces), session.stats.to_dict())
            self._save_cache(session, job.conversation_id)
        except Cancelled:
            self.finished.emit(job.id, "".join(pieces), {"finish_reason": "cancelled"})
        except FolioError as e:
            self.failed.emit(job.id, str(e))
        except Exception as e:
            logger.exception("generation failed")
            self.failed.emit(job.id, f"Generation failed: {e}")
        finally:
            self._cancelled.discard(job.id)

    def _saved_caches(self):
        from app.saved_caches import SavedCaches

        if self._saved is None:
            self._saved = SavedCaches()
        return self._saved

    def _restore_saved(self, session, conversation_id: int):
        """A reopened conversation starts from its cache on disk, when one fits this model and KV mode."""
        try:
            n = self._saved_caches().restore(session, conversation_id)
        except Exception:  # a saved cache is only a shortcut: without it the turn prefills
            logger.exception("restoring the saved cache of conversation %s failed", conversation_id)
            return
        if n:
            logger.info("conversation %s: %d tokens restored from its saved cache", conversation_id, n)

    def _save_cache(self, session, conversation_id: int):
        from app.engine.errors import FolioError

        try:
            self._saved_caches().save_session(session, conversation_id)
        except FolioError as e:
            self.notice.emit(str(e))
        except Exception:
            logger.exception("saving the cache of conversation %s failed", conversation_id)

    @Slot(object)
    def inspect_documents(self, request: dict):
        """Chips for the composer: read the files, count tokens, plan the fit against this conversation."""
        from app import documents

        try:
            # The mode generation will use, found without _kv_mode's notice on every attach.
            ok = self._model is not None and documents.kv_mode_available(self._model.shape, request["kv_mode"])
            mode = request["kv_mode"] if ok else "fp16"
            key = (id(self._model), mode)
            if self._model is not None and key not in self._prefill_tps:
                self._prefill_tps[key] = documents.measure_prefill_tps(self._model, mode)
            infos = documents.inspect(
                request["paths"], self._model, request["messages"], mode, request["context_limit"] or None,
                self._prefill_tps.get(key, 0.0), on_progress=lambda p, d, t: self.documentProgress.emit(str(p), d, t),
                cache=self._documents,
            )
        except Exception as e:
            logger.exception("inspecting documents failed")
            infos = [{"path": p, "error": f"Could not read this document: {e}"} for p in request["paths"]]
        self.documentsInspected.emit(infos)

    @Slot(object)
    def prepare(self, req: Prepare):
        """Read the attached documents and plan them against this conversation's session (model, KV mode, context)."""
        from app import documents
        from app.engine.errors import Cancelled, FolioError

        try:
            if self._stopping(req.id):
                raise Cancelled()
            if self._model is None:
                raise FolioError("No model is loaded. Choose one in the toolbar (⌘L).")
            docs = [self._document(item, req.id) for item in req.documents]
            session = self._session(req)
            tps = self._prefill_tps.get((id(self._model), session.kv_mode)) or None
            messages, plan = documents.into_messages(session, req.messages, docs, prefill_tps=tps)
        except Cancelled:
            self.prepareFailed.emit(req.id, "")
            return
        except FolioError as e:
            self.prepareFailed.emit(req.id, str(e))
            return
        except Exception as e:
            logger.exception("preparing documents failed")
            self.prepareFailed.emit(req.id, f"Could not prepare the documents: {e}")
            return
        finally:
            self._cancelled.discard(req.id)
        self.prepared.emit(req.id, {
            "fits": plan.fits, "reason": plan.reason, "larger_context": plan.larger_context,
            "context_limit": plan.context_limit, "warnings": list(plan.warnings), "long_prefill": plan.long_prefill,
            "tokens": plan.tokens, "sent_tokens": plan.sent_tokens, "message": messages[-1]["content"],
            "documents": [
                {"name": d.name, "kind": d.kind, "sha256": d.sha256, "pages": d.page_count, "text": d.to_text(),
                 "tokens": f.tokens, "mode": f.mode, "passages": list(f.passages)}
                for d, f in zip(docs, plan.docs)
            ],
        })

    def _document(self, item, req_id: int):
        from app import documents

        if isinstance(item, dict):
            return documents.Document.from_text(item["name"], item["text"], item.get("kind", "pdf"), item.get("sha256", ""))
        path = Path(item)
        if path not in self._documents:  # usually read already, for its chip
            self._documents[path] = documents.load(
                path, on_progress=lambda d, t: self.documentProgress.emit(str(path), d, t),
                should_stop=lambda: self._stopping(req_id),
            )
        return self._documents[path]

    @Slot(list)
    def list_models(self, imported: list):
        """The picker's models through app.hub, here because checking a folder imports the engine."""
        from types import SimpleNamespace

        from app.hub import installed

        try:
            models = installed.list_models(SimpleNamespace(imported_models=imported))
        except Exception:  # an unreadable cache costs the list, never the app
            logger.exception("listing installed models failed")
            models = installed.imported_models(SimpleNamespace(imported_models=imported))
        self.modelsListed.emit([m.as_dict() for m in models])

    def _flush(self, job_id, pending, n, t0, t_first, now):
        self.text.emit(job_id, "".join(pending))
        pending.clear()
        tps = (n - 1) / (now - t_first) if n > 1 and now > t_first else 0.0
        self.live.emit(job_id, {"pieces": n, "tps": tps, "ttft_s": t_first - t0})


class Engine(QObject):
    """The UI's handle on the worker thread. Every method returns at once."""

    _load = Signal(str)
    _generate = Signal(object)
    _forget = Signal(int)
    _inspect = Signal(object)
    _prepare = Signal(object)
    _list_models = Signal(list)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._ids = itertools.count(1)
        self._cancelled: set[int] = set()
        self._flags: dict = {}
        self.thread = QThread()
        self.thread.setObjectName("folio-engine")
        self.worker = _Worker(self._cancelled, self._flags)
        self.worker.moveToThread(self.thread)
        # The worker lives in the engine thread, so these connections are queued.
        self._load.connect(self.worker.load)
        self._generate.connect(self.worker.generate)
        self._forget.connect(self.worker.forget)
        self._inspect.connect(self.worker.inspect_documents)
        self._prepare.connect(self.worker.prepare)
        self._list_models.connect(self.worker.list_models)
        self.thread.start()

    def load(self, name: str):
        self._load.emit(name)

    def generate(self, conversation_id: int, messages: list, params: dict | None = None,
                 kv_mode: str = "auto", context_limit: int = 0) -> int:
        job = Job(next(self._ids), conversation_id, list(messages), dict(params or {}), kv_mode, context_limit)
        self._generate.emit(job)
        return job.id

    def inspect_documents(self, paths: list, messages: list, kv_mode: str = "auto", context_limit: int = 0):
        self._inspect.emit({"paths": list(paths), "messages": list(messages), "kv_mode": kv_mode,
                            "context_limit": context_limit})

    def prepare(self, conversation_id: int, messages: list, documents: list, kv_mode: str = "auto",
                context_limit: int = 0) -> int:
        """Read and plan `documents` into the last message; answers with `prepared` or `prepareFailed`.
        Its id shares the jobs' numbering, so `stop` cancels it too."""
        req = Prepare(next(self._ids), conversation_id, list(messages), list(documents), kv_mode, context_limit)
        self._prepare.emit(req)
        return req.id

    def list_models(self, imported: list):
        self._list_models.emit([str(p) for p in imported])

    def stop(self, job_id: int):
        """Checked by the worker before every token; a queued job that is stopped never starts."""
        self._cancelled.add(job_id)

    def forget(self, conversation_id: int):
        self._forget.emit(conversation_id)

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Stop whatever runs, end the thread and wait for it; True when it ended in time."""
        if not self.thread.isRunning():
            return True
        self._flags["quitting"] = True
        self.thread.quit()
        done = self.thread.wait(timeout_ms)
        if not done:
            logger.warning("engine thread did not stop within %d ms", timeout_ms)
        return done
