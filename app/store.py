"""The conversation store: SQLite with conversations, messages, attachments and full-text search.

One file in the app data dir, in WAL mode with foreign keys on. The schema version lives in
`PRAGMA user_version` and moves forward through app.store_schema.MIGRATIONS. A file that is not a database,
is damaged, or was written by a newer Folio is moved aside (never overwritten or deleted)
and a fresh store starts; `Store.notice` then says what happened, in one line.
"""

import html
import json
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from app import log, paths, store_export, store_schema
from app.engine.errors import FolioError
from app.store_export import DEFAULT_TITLE, ROLES, STATES, clean_title

logger = log.get("store")

FILE_NAME = "folio.sqlite3"
STREAM_WRITE_INTERVAL_S = 1.0
TITLE_CHARS = 60
# Control characters that cannot occur in stored text; snippet() wraps matches in them so the
# text can be HTML-escaped before the markers become <b>..</b>.
_HL_OPEN, _HL_CLOSE = "\x02", "\x03"



class StoreError(FolioError):
    """The store could not read or write; the message says what to do."""


@dataclass
class Conversation:
    id: int
    title: str
    created: float
    updated: float
    model_id: str
    settings: dict = field(default_factory=dict)


@dataclass
class Attachment:
    id: int
    file_name: str
    sha256: str
    pages: int
    text: str
    token_count: int


@dataclass
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    created: float
    state: str
    stats: dict = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attachments: list = field(default_factory=list)


@dataclass
class SearchHit:
    conversation_id: int
    message_id: int
    title: str
    snippet: str  # HTML-escaped message text around the match, matches in <b>..</b>


class Store:
    """SQLite file in app.paths.data_dir()/"folio.sqlite3"; safe to use from any one thread at a time."""

    def __init__(self, path=None):
        try:
            self.path = Path(path) if path else paths.data_dir() / FILE_NAME
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"Could not create the folder for conversations ({e}).") from None
        self.notice: str | None = None  # set when a bad file was moved aside on open
        self.moved_to: Path | None = None
        self._lock = threading.RLock()
        self._pending: dict[int, tuple[str, float]] = {}  # streaming msg id -> (content, last write)
        self._db = self._open()
        self._recover_streams()

    # -- opening ----------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        db = None
        try:
            db = self._connect()
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > store_schema.SCHEMA_VERSION:
                db.close()
                return self._start_fresh(
                    f"was written by a newer version of Folio (schema {version}, this one reads up to {store_schema.SCHEMA_VERSION})",
                    "newer",
                )
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                db.close()
                return self._start_fresh(f"is damaged ({check})", "corrupt")
            self._migrate(db, version)
            return db
        except sqlite3.DatabaseError as e:
            if db is not None:
                db.close()
            if (_code(e) or 0) & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                return self._start_fresh(f"is damaged or not a database ({e})", "corrupt")
            raise _store_error(e, "open the conversation store") from None

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (`with self._tx()`), nothing is left open.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys = ON")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            logger.warning("store %s is in journal mode %s, not WAL", self.path, mode)
        # FULL: every commit reaches the disk, so a finished message survives even a power cut.
        db.execute("PRAGMA synchronous = FULL")
        return db

    def _migrate(self, db, version: int):
        for v in range(version, store_schema.SCHEMA_VERSION):
            logger.info("store %s: migrating schema %d -> %d", self.path, v, v + 1)
            # executescript commits first; the BEGIN inside keeps each step all-or-nothing.
            db.executescript(f"BEGIN;\n{store_schema.MIGRATIONS[v]}\nPRAGMA user_version = {v + 1};\nCOMMIT;")

    def _start_fresh(self, why: str, tag: str) -> sqlite3.Connection:
        moved = _move_aside(self.path, tag)
        self.moved_to = moved
        self.notice = (
            f"The conversation database {why}. It was moved to {moved} and a new, empty one was started."
        )
        logger.warning(self.notice)
        db = self._connect()
        self._migrate(db, 0)
        return db

    def _recover_streams(self):
        """Answers a dead process was streaming become "interrupted"; a live writer's are left alone."""
        rows = self._db.execute("SELECT id, stream_pid, created FROM messages WHERE state = 'generating'").fetchall()
        dead = [r["id"] for r in rows if not _streaming(r["stream_pid"], r["created"])]
        if dead:
            with self._tx() as db:
                db.executemany(
                    "UPDATE messages SET state = 'interrupted', stream_pid = NULL WHERE id = ?",
                    [(i,) for i in dead],
                )
            logger.info("marked %d unfinished answer(s) as interrupted", len(dead))

    def close(self):
        """Write what is still only in memory, then close; a message left generating is recovered on reopen."""
        with self._lock:
            try:
                for msg_id in list(self._pending):
                    self._flush(msg_id)
            finally:
                self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- transactions -----------------------------------------------------
    def _tx(self):
        return _Transaction(self)

    def _query(self, sql, args=()):
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as e:
                raise _store_error(e, "read the conversation store") from None

    # -- conversations ----------------------------------------------------
    def create_conversation(self, title=DEFAULT_TITLE, model_id="", settings=None) -> int:
        now = time.time()
        title = clean_title(title) or DEFAULT_TITLE
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO conversations (title, title_auto, created, updated, model_id, settings) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (title, int(title == DEFAULT_TITLE), now, now, model_id or "", _dumps(settings or {})),
            )
            return cur.lastrowid

    def list_conversations(self) -> list[Conversation]:
        rows = self._query("SELECT * FROM conversations ORDER BY updated DESC, id DESC")
        return [_conversation(r) for r in rows]

    def get_conversation(self, conv_id) -> Conversation:
        rows = self._query("SELECT * FROM conversations WHERE id = ?", (conv_id,))
        if not rows:
            raise StoreError(f"Conversation {conv_id} does not exist (it may have been deleted).")
        return _conversation(rows[0])

    def rename_conversation(self, conv_id, title):
        title = clean_title(title)
        if not title:
            raise StoreError("A conversation title cannot be empty.")
        with self._tx() as db:
            self._require(db, conv_id)
            db.execute("UPDATE conversations SET title = ?, title_auto = 0 WHERE id = ?", (title, conv_id))

    def delete_conversation(self, conv_id):
        with self._tx() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (conv_id,))
        self._forget_deleted()

    def _forget_deleted(self):
        with self._lock:
            for msg_id in list(self._pending):
                if not self._query("SELECT 1 FROM messages WHERE id = ?", (msg_id,)):
                    del self._pending[msg_id]

    def update_conversation(self, conv_id, *, model_id=None, settings=None):
        with self._tx() as db:
            self._require(db, conv_id)
            if model_id is not None:
                db.execute("UPDATE conversations SET model_id = ? WHERE id = ?", (model_id, conv_id))
            if settings is not None:
                db.execute("UPDATE conversations SET settings = ? WHERE id = ?", (_dumps(settings), conv_id))

    # -- messages ---------------------------------------------------------
    def add_message(self, conv_id, role, content, *, state="complete", stats=None, attachment_ids=()) -> int:
        _check_role(role)
        _check_state(state)
        stats = stats or {}
        now = time.time()
        with self._tx() as db:
            self._require(db, conv_id)
            cur = db.execute(
                "INSERT INTO messages (conversation_id, role, content, created, state, stats, "
                "prompt_tokens, completion_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (conv_id, role, content, now, state, _dumps(stats),
                 int(stats.get("prompt_tokens", 0)), int(stats.get("generated_tokens", 0))),
            )
            msg_id = cur.lastrowid
            for pos, att in enumerate(attachment_ids):
                db.execute(
                    "INSERT INTO message_attachments (message_id, attachment_id, position) "
                    "SELECT ?, id, ? FROM attachments WHERE id = ? AND conversation_id = ?",
                    (msg_id, pos, att, conv_id),
                )
                if not db.execute("SELECT changes()").fetchone()[0]:
                    raise StoreError(f"Attachment {att} does not belong to conversation {conv_id}.")
            if role == "user":
                self._auto_title(db, conv_id, content)
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conv_id))
            return msg_id

    def messages(self, conv_id) -> list[Message]:
        with self._lock:
            rows = self._query("SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conv_id,))
            links = self._query(
                "SELECT ma.message_id, a.* FROM message_attachments ma "
                "JOIN attachments a ON a.id = ma.attachment_id "
                "JOIN messages m ON m.id = ma.message_id "
                "WHERE m.conversation_id = ? ORDER BY ma.message_id, ma.position",
                (conv_id,),
            )
            pending = dict(self._pending)
        by_msg: dict[int, list] = {}
        for r in links:
            by_msg.setdefault(r["message_id"], []).append(_attachment(r))
        out = []
        for r in rows:
            m = _message(r, by_msg.get(r["id"], []))
            if m.id in pending:  # not yet on disk, but the caller should see the latest text
                m.content = pending[m.id][0]
            out.append(m)
        return out

    def begin_stream(self, conv_id) -> int:
        """An empty assistant message in state "generating", owned by this process."""
        now = time.time()
        with self._tx() as db:
            self._require(db, conv_id)
            cur = db.execute(
                "INSERT INTO messages (conversation_id, role, content, created, state, stream_pid) "
                "VALUES (?, 'assistant', '', ?, 'generating', ?)",
                (conv_id, now, os.getpid()),
            )
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conv_id))
            msg_id = cur.lastrowid
        self._pending[msg_id] = ("", time.monotonic())
        return msg_id

    def update_stream(self, msg_id, content):
        """Called per token with the whole text so far; reaches the disk at most about once a second.

        Never raises for a failed write (it is called from a token slot): the text stays in memory,
        the write is retried a second later, and finish_message reports what still fails.
        """
        with self._lock:
            if msg_id not in self._pending:  # finished, deleted, or not begun by this store
                return
            _, last = self._pending[msg_id]
            self._pending[msg_id] = (content, last)
            if time.monotonic() - last >= STREAM_WRITE_INTERVAL_S:
                try:
                    self._flush(msg_id)
                except StoreError as e:
                    self._pending[msg_id] = (content, time.monotonic())
                    logger.warning("streaming answer %s kept in memory: %s", msg_id, e)

    def _flush(self, msg_id):
        content, _ = self._pending[msg_id]
        with self._tx() as db:
            db.execute("UPDATE messages SET content = ? WHERE id = ? AND state = 'generating'", (content, msg_id))
        self._pending[msg_id] = (content, time.monotonic())

    def finish_message(self, msg_id, content, state="complete", stats=None):
        _check_state(state)
        stats = stats or {}
        with self._lock:
            if msg_id in self._pending:  # if the write below fails, the final text stays in memory
                self._pending[msg_id] = (content, self._pending[msg_id][1])
        with self._tx() as db:
            cur = db.execute(
                "UPDATE messages SET content = ?, state = ?, stats = ?, prompt_tokens = ?, "
                "completion_tokens = ?, stream_pid = NULL WHERE id = ?",
                (content, state, _dumps(stats), int(stats.get("prompt_tokens", 0)),
                 int(stats.get("generated_tokens", 0)), msg_id),
            )
            if not cur.rowcount:
                raise StoreError(f"Message {msg_id} does not exist (its conversation may have been deleted).")
            db.execute(
                "UPDATE conversations SET updated = ? WHERE id = (SELECT conversation_id FROM messages WHERE id = ?)",
                (time.time(), msg_id),
            )
        # Only once the final text is on disk: if the write failed, the pending text is kept.
        self._pending.pop(msg_id, None)

    def delete_messages_from(self, conv_id, msg_id):
        """Edit or regenerate: drop `msg_id` and every later message of the conversation."""
        with self._tx() as db:
            db.execute("DELETE FROM messages WHERE conversation_id = ? AND id >= ?", (conv_id, msg_id))
            # Attachments stay: the edited message is usually re-sent with the same documents.
        self._forget_deleted()

    # -- search -----------------------------------------------------------
    def search(self, query) -> list[SearchHit]:
        """Messages matching every word of `query`, best first, after conversations found by title only.

        The last word counts as a prefix (as-you-type). A title hit points at the conversation's
        first message (0 when it has none) and its snippet is the highlighted title.
        """
        match = fts_query(query)
        if not match:
            return []
        titles = self._query(
            "SELECT c.id, COALESCE((SELECT MIN(id) FROM messages WHERE conversation_id = c.id), 0), c.title, "
            f"highlight(conversations_fts, 0, '{_HL_OPEN}', '{_HL_CLOSE}') "
            "FROM conversations_fts JOIN conversations c ON c.id = conversations_fts.rowid "
            "WHERE conversations_fts MATCH ? ORDER BY bm25(conversations_fts), c.updated DESC LIMIT 50",
            (match,),
        )
        messages = self._query(
            "SELECT m.conversation_id, m.id, c.title, "
            f"snippet(messages_fts, 0, '{_HL_OPEN}', '{_HL_CLOSE}', '…', 16) "
            "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
            "JOIN conversations c ON c.id = m.conversation_id "
            "WHERE messages_fts MATCH ? ORDER BY bm25(messages_fts), c.updated DESC LIMIT 200",
            (match,),
        )
        # A title hit only adds a conversation its messages did not already bring (auto titles
        # repeat the first message).
        found = {r[0] for r in messages}
        titles = [r for r in titles if r[0] not in found]
        return [SearchHit(r[0], r[1], r[2], _highlight(r[3])) for r in [*titles, *messages]]

    # -- attachments ------------------------------------------------------
    def add_attachment(self, conv_id, file_name, sha256, pages, text, token_count) -> int:
        with self._tx() as db:
            self._require(db, conv_id)
            cur = db.execute(
                "INSERT INTO attachments (conversation_id, file_name, sha256, pages, text, token_count, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conv_id, file_name, sha256, int(pages), text, int(token_count), time.time()),
            )
            return cur.lastrowid

    def attachments(self, conv_id) -> list[Attachment]:
        rows = self._query("SELECT * FROM attachments WHERE conversation_id = ? ORDER BY id", (conv_id,))
        return [_attachment(r) for r in rows]

    # -- export / import --------------------------------------------------
    def export_markdown(self, conv_id) -> str:
        return store_export.to_markdown(self.get_conversation(conv_id), self.messages(conv_id))

    def export_json(self, conv_id) -> dict:
        return store_export.to_json(self.get_conversation(conv_id), self.attachments(conv_id), self.messages(conv_id))

    def import_json(self, data) -> int:
        """A new conversation from `export_json` output (or its JSON text); returns its id."""
        conv, atts, msgs = store_export.parse(data)
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO conversations (title, title_auto, created, updated, model_id, settings) "
                "VALUES (?, 0, ?, ?, ?, ?)",
                (conv["title"], conv["created"], conv["updated"], conv["model_id"], _dumps(conv["settings"])),
            )
            conv_id = cur.lastrowid
            new_att = {}
            for a in atts:
                cur = db.execute(
                    "INSERT INTO attachments (conversation_id, file_name, sha256, pages, text, token_count, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (conv_id, a["file_name"], a["sha256"], a["pages"], a["text"], a["token_count"], conv["created"]),
                )
                new_att[a["id"]] = cur.lastrowid
            for m in msgs:
                cur = db.execute(
                    "INSERT INTO messages (conversation_id, role, content, created, state, stats, "
                    "prompt_tokens, completion_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (conv_id, m["role"], m["content"], m["created"], m["state"], _dumps(m["stats"]),
                     m["prompt_tokens"], m["completion_tokens"]),
                )
                for pos, old in enumerate(m["attachment_ids"]):
                    db.execute(
                        "INSERT INTO message_attachments (message_id, attachment_id, position) VALUES (?, ?, ?)",
                        (cur.lastrowid, new_att[old], pos),
                    )
            return conv_id

    # -- helpers ----------------------------------------------------------
    def _require(self, db, conv_id):
        if not db.execute("SELECT 1 FROM conversations WHERE id = ?", (conv_id,)).fetchone():
            raise StoreError(f"Conversation {conv_id} does not exist (it may have been deleted).")

    def _auto_title(self, db, conv_id, content):
        row = db.execute("SELECT title_auto FROM conversations WHERE id = ?", (conv_id,)).fetchone()
        if not row or not row[0]:
            return
        users = db.execute(
            "SELECT COUNT(*) FROM messages WHERE conversation_id = ? AND role = 'user'", (conv_id,)
        ).fetchone()[0]
        title = title_from(content)
        # The first user message names the chat; editing that message renames it. A first
        # message with no text (only a document) leaves the naming to the next one.
        current = db.execute("SELECT title FROM conversations WHERE id = ?", (conv_id,)).fetchone()[0]
        if title and (users == 1 or current == DEFAULT_TITLE):
            db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conv_id))


class _Transaction:
    """BEGIN IMMEDIATE .. COMMIT under the store's lock; any failure rolls back and becomes a StoreError."""

    def __init__(self, store: Store):
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._lock.acquire()
        try:
            self.store._db.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as e:
            self.store._lock.release()
            raise _store_error(e, "save") from None
        return self.store._db

    def __exit__(self, exc_type, exc, tb):
        db = self.store._db
        try:
            if exc_type is None:
                try:
                    db.execute("COMMIT")
                    return False
                except sqlite3.DatabaseError as e:
                    exc = e
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.DatabaseError):
                raise _store_error(exc, "save") from None
            return False
        finally:
            self.store._lock.release()


# -- module helpers -----------------------------------------------------------
def fts_query(text: str) -> str:
    """User text as an FTS5 query: every word must match, quoted so no word acts as an operator."""
    words = re.findall(r"\w+", text or "")
    if not words:
        return ""
    terms = [f'"{w}"' for w in words]
    terms[-1] += "*"  # as-you-type: the last word may be incomplete
    return " ".join(terms)


def title_from(content: str) -> str:
    """The first non-empty line of a message, shortened at a word boundary."""
    line = next((ln.strip() for ln in (content or "").splitlines() if ln.strip()), "")
    line = re.sub(r"\s+", " ", line)
    if len(line) <= TITLE_CHARS:
        return line
    cut = line[:TITLE_CHARS].rsplit(" ", 1)[0] or line[:TITLE_CHARS]
    return cut.rstrip(" ,.;:") + "…"


def _highlight(snippet: str) -> str:
    return html.escape(snippet or "", quote=False).replace(_HL_OPEN, "<b>").replace(_HL_CLOSE, "</b>")


def _check_role(role):
    if role not in ROLES:
        raise StoreError(f"Unknown message role {role!r}; expected one of {', '.join(ROLES)}.")


def _check_state(state):
    if state not in STATES:
        raise StoreError(f"Unknown message state {state!r}; expected one of {', '.join(STATES)}.")


def _dumps(obj) -> str:
    try:
        return json.dumps(obj, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise StoreError(f"Could not save settings or stats: {e}.") from None


def _loads(text) -> dict:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _conversation(r) -> Conversation:
    return Conversation(r["id"], r["title"], r["created"], r["updated"], r["model_id"], _loads(r["settings"]))


def _attachment(r) -> Attachment:
    return Attachment(r["id"], r["file_name"], r["sha256"], r["pages"], r["text"], r["token_count"])


def _message(r, attachments) -> Message:
    return Message(
        r["id"], r["conversation_id"], r["role"], r["content"], r["created"], r["state"],
        _loads(r["stats"]), r["prompt_tokens"], r["completion_tokens"], attachments,
    )


def _code(e: Exception) -> int | None:
    return getattr(e, "sqlite_errorcode", None)


def _store_error(e: sqlite3.Error, doing: str) -> StoreError:
    code = _code(e)
    base = (code or 0) & 0xFF
    if base == sqlite3.SQLITE_FULL:
        msg = f"Could not {doing}: the disk is full. Free some space and try again; nothing already saved was lost."
    elif base in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_CANTOPEN):
        msg = f"Could not {doing}: the conversation database is not writable ({e})."
    elif base == sqlite3.SQLITE_BUSY:
        msg = f"Could not {doing}: the conversation database is busy (another Folio window?). Try again."
    elif base == sqlite3.SQLITE_IOERR:
        msg = f"Could not {doing}: the disk reported an error ({e}). Nothing already saved was lost."
    else:
        msg = f"Could not {doing}: {e}."
    logger.error("store error (%s): %s", code, e)
    return StoreError(msg)


def _move_aside(path: Path, tag: str) -> Path:
    """Rename the database (and its -wal/-shm) to an unused name beside it; never overwrite."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    n = 0
    while True:
        suffix = f".{tag}-{stamp}" + (f"-{n}" if n else "")
        target = path.with_name(path.stem + suffix + path.suffix)
        sidecars = [Path(str(target) + s) for s in ("-wal", "-shm")]
        if not target.exists() and not any(s.exists() for s in sidecars):
            break
        n += 1
    if path.exists():
        os.rename(path, target)
    for s in ("-wal", "-shm"):
        side = Path(str(path) + s)
        if side.exists():
            os.rename(side, Path(str(target) + s))
    return target


def _streaming(pid, since: float) -> bool:
    """Whether the process that began a stream at `since` still runs (a reused pid started later)."""
    if not pid:
        return False
    if pid == os.getpid():
        return True
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() <= since + 1.0
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.Error:
        return True
