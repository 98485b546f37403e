"""The conversation store: conversations, messages, streaming, search, export/import, bad files."""

import json
import sqlite3
import time

import pytest

from app import paths
from app.engine.errors import FolioError
from app.store import Store, StoreError, fts_query, title_from
from app.store_schema import SCHEMA_VERSION


@pytest.fixture
def store():
    s = Store()
    yield s
    s.close()


def raw(store, sql, args=()):
    """Read what is on disk through a second connection, not through the store's own."""
    db = sqlite3.connect(store.path)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def test_unusable_folder_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="Could not create the folder"):
        Store(tmp_path / "file" / "sub" / "folio.sqlite3")


def test_file_lives_in_data_dir_with_wal_and_foreign_keys(store):
    assert store.path == paths.data_dir() / "folio.sqlite3"
    assert store.path.exists()
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert raw(store, "PRAGMA user_version")[0][0] == SCHEMA_VERSION
    assert store.notice is None


def test_conversations_crud_and_order(store):
    a = store.create_conversation(model_id="m1", settings={"temperature": 0.2})
    b = store.create_conversation("Second")
    conv = store.get_conversation(a)
    assert (conv.title, conv.model_id, conv.settings) == ("New chat", "m1", {"temperature": 0.2})
    assert [c.id for c in store.list_conversations()] == [b, a]
    time.sleep(0.01)
    store.add_message(a, "user", "hi")  # activity moves a conversation to the top
    assert [c.id for c in store.list_conversations()] == [a, b]

    store.rename_conversation(b, "  Renamed   chat ")
    assert store.get_conversation(b).title == "Renamed chat"
    store.update_conversation(a, model_id="m2", settings={"top_p": 0.5})
    conv = store.get_conversation(a)
    assert (conv.model_id, conv.settings) == ("m2", {"top_p": 0.5})

    store.delete_conversation(a)
    assert [c.id for c in store.list_conversations()] == [b]
    assert raw(store, "SELECT COUNT(*) FROM messages")[0][0] == 0  # cascaded
    with pytest.raises(StoreError, match="does not exist"):
        store.get_conversation(a)
    with pytest.raises(StoreError, match="empty"):
        store.rename_conversation(b, "   ")


def test_title_comes_from_first_user_message_unless_renamed(store):
    c = store.create_conversation()
    store.add_message(c, "system", "You are helpful.")
    store.add_message(c, "user", "\n  How do I   parse JSON in Python?\nMore detail here.")
    store.add_message(c, "user", "second question")
    assert store.get_conversation(c).title == "How do I parse JSON in Python?"

    f = store.create_conversation()
    store.add_message(f, "user", "   ")  # only a document, no words: the next message names it
    store.add_message(f, "user", "Second one names it")
    assert store.get_conversation(f).title == "Second one names it"
    store.delete_messages_from(f, store.messages(f)[0].id)  # editing the first message renames
    store.add_message(f, "user", "Edited first message")
    assert store.get_conversation(f).title == "Edited first message"

    long = "word " * 40
    assert len(title_from(long)) <= 61 and title_from(long).endswith("…")

    d = store.create_conversation()
    store.rename_conversation(d, "Mine")
    store.add_message(d, "user", "something else")
    assert store.get_conversation(d).title == "Mine"
    e = store.create_conversation("Given title")
    store.add_message(e, "user", "text")
    assert store.get_conversation(e).title == "Given title"


def test_messages_with_stats_and_attachments(store):
    c = store.create_conversation()
    att = store.add_attachment(c, "paper.pdf", "ab" * 32, 12, "page text", 3400)
    u = store.add_message(c, "user", "Summarise", attachment_ids=[att])
    stats = {"prompt_tokens": 3500, "generated_tokens": 42, "ttft_s": 0.5}
    a = store.add_message(c, "assistant", "It says...", stats=stats)
    f = store.add_message(c, "assistant", "", state="failed", stats={"error": "Out of memory."})
    msgs = store.messages(c)
    assert [m.id for m in msgs] == [u, a, f]
    assert msgs[0].attachments[0].file_name == "paper.pdf" and msgs[0].attachments[0].token_count == 3400
    assert (msgs[1].stats, msgs[1].prompt_tokens, msgs[1].completion_tokens) == (stats, 3500, 42)
    assert msgs[2].state == "failed" and msgs[2].stats["error"] == "Out of memory."
    with pytest.raises(StoreError, match="state"):
        store.add_message(c, "assistant", "x", state="weird")
    with pytest.raises(StoreError, match="role"):
        store.add_message(c, "robot", "x")
    other = store.create_conversation()
    with pytest.raises(StoreError, match="does not belong"):
        store.add_message(other, "user", "x", attachment_ids=[att])
    assert len(store.messages(other)) == 0  # the failed insert was rolled back whole


def test_stream_writes_at_most_once_a_second_and_finishes(store, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("app.store.time.monotonic", lambda: clock[0])
    c = store.create_conversation()
    store.add_message(c, "user", "q")
    m = store.begin_stream(c)
    on_disk = lambda: raw(store, "SELECT content, state FROM messages WHERE id = ?", (m,))[0]  # noqa: E731
    assert on_disk() == ("", "generating")
    store.update_stream(m, "Hel")
    store.update_stream(m, "Hello")
    assert on_disk() == ("", "generating")  # within the second: memory only
    assert store.messages(c)[-1].content == "Hello"  # but readers see the latest text
    clock[0] += 1.01
    store.update_stream(m, "Hello wor")
    assert on_disk() == ("Hello wor", "generating")
    store.update_stream(m, "Hello world")
    store.finish_message(m, "Hello world!", "stopped", {"generated_tokens": 4, "finish_reason": "stopped"})
    assert on_disk() == ("Hello world!", "stopped")
    clock[0] += 5
    store.update_stream(m, "a late token signal")  # after finish: ignored, the final text stays
    assert on_disk()[0] == store.messages(c)[-1].content == "Hello world!"
    assert store.messages(c)[-1].completion_tokens == 4


def test_delete_messages_from(store):
    c = store.create_conversation()
    ids = [store.add_message(c, r, t) for r, t in [("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")]]
    other = store.create_conversation()
    keep = store.add_message(other, "user", "elsewhere")
    store.delete_messages_from(c, ids[2])
    assert [m.content for m in store.messages(c)] == ["a", "b"]
    assert [m.id for m in store.messages(other)] == [keep]
    assert [h for h in store.search("c") if h.message_id in ids] == []


def test_search_highlights_and_escapes(store):
    c = store.create_conversation("Parsing")
    m = store.add_message(c, "user", "How to use <script> tags with the tokenizer? Also café.")
    store.add_message(c, "assistant", "Unrelated answer about gardening.")
    hits = store.search("tokeni")  # the last word is a prefix: as-you-type
    assert [(h.conversation_id, h.message_id, h.title) for h in hits] == [(c, m, "Parsing")]
    assert "<b>tokenizer</b>" in hits[0].snippet
    assert "&lt;script&gt;" in hits[0].snippet and "<script>" not in hits[0].snippet
    assert [h.message_id for h in store.search("cafe")] == [m]  # diacritics folded
    assert store.search("tokenizer gardening") == []  # every word must match one message
    assert store.search("") == [] and store.search("   ,;") == []
    # Query syntax the user may type never reaches FTS5 as operators.
    for q in ['"unbalanced', "AND OR NOT", "col:umn", "a*b (c", "NEAR(x y)"]:
        store.search(q)
    assert fts_query('say "hi" -x') == '"say" "hi" "x"*'


def test_search_finds_titles_first(store):
    c = store.create_conversation()
    first = store.add_message(c, "user", "hello there")
    store.rename_conversation(c, "Quarterly <budget> review")
    hits = store.search("budget")
    assert [(h.conversation_id, h.message_id) for h in hits] == [(c, first)]
    assert hits[0].snippet == "Quarterly &lt;<b>budget</b>&gt; review"
    m = store.add_message(c, "assistant", "the budget is fine")
    # Its messages already bring the conversation: no second row for the title.
    assert [(h.message_id, h.snippet) for h in store.search("budget")] == [(m, "the <b>budget</b> is fine")]
    store.rename_conversation(c, "Something else")
    assert len(store.search("quarterly")) == 0
    empty = store.create_conversation("Unused draft")
    assert [(h.conversation_id, h.message_id) for h in store.search("draft")] == [(empty, 0)]


def test_forward_migration_keeps_data(monkeypatch):
    import app.store_schema as store_mod

    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", 1)
    with Store() as old:
        c = old.create_conversation("Old title words")
        old.add_message(c, "user", "old message")
        assert raw(old, "PRAGMA user_version")[0][0] == 1
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", len(store_mod.MIGRATIONS))
    with Store() as new:
        assert new.notice is None
        assert raw(new, "PRAGMA user_version")[0][0] == SCHEMA_VERSION
        assert [m.content for m in new.messages(c)] == ["old message"]
        assert [h.conversation_id for h in new.search("title words")] == [c]  # indexed by the migration


def test_search_follows_edits_and_deletes(store):
    c = store.create_conversation()
    m = store.begin_stream(c)
    store.finish_message(m, "the quick brown fox")
    assert [h.message_id for h in store.search("brown")] == [m]
    store.delete_messages_from(c, m)
    assert store.search("brown") == []
    store.add_message(c, "user", "brown again")
    store.delete_conversation(c)
    assert store.search("brown") == []


def test_export_markdown_and_json_round_trip(store):
    c = store.create_conversation(model_id="tiny", settings={"temperature": 0.1})
    att = store.add_attachment(c, "notes.txt", "00" * 32, 1, "doc body", 3)
    store.add_message(c, "user", "Question **bold**", attachment_ids=[att])
    store.add_message(c, "assistant", "Answer", stats={"prompt_tokens": 9, "generated_tokens": 2})
    store.add_message(c, "assistant", "partial", state="interrupted")
    store.begin_stream(c)  # exported mid-answer: imported as interrupted
    md = store.export_markdown(c)
    assert md.startswith("# Question **bold**\n")
    assert "## User" in md and "## Assistant" in md and "## Assistant (interrupted)" in md
    assert "Attached: notes.txt" in md and "model: tiny" in md

    data = store.export_json(c)
    text = json.dumps(data)  # must be plain JSON
    new = store.import_json(text)
    assert new != c
    a, b = store.messages(c), store.messages(new)
    strip = lambda ms: [(m.role, m.content, m.state, m.stats, m.completion_tokens,  # noqa: E731
                         [(x.file_name, x.text) for x in m.attachments]) for m in ms]
    assert strip(a)[:-1] == strip(b)[:-1]
    assert (a[-1].state, b[-1].state) == ("generating", "interrupted")
    got = store.get_conversation(new)
    assert (got.title, got.model_id, got.settings) == ("Question **bold**", "tiny", {"temperature": 0.1})
    assert store.export_json(new)["messages"][0]["attachment_ids"] != []


@pytest.mark.parametrize("data, match", [
    ("not json", "not valid JSON"),
    ({"format": "other"}, "not a Folio conversation export"),
    ({"format": "folio-conversation", "version": 99}, "update Folio"),
    ({"format": "folio-conversation", "version": 1, "conversation": {}, "messages": [{"role": "x", "content": ""}]},
     "message 1"),
    ({"format": "folio-conversation", "version": 1, "conversation": {}}, "missing or malformed"),
])
def test_import_rejects_bad_input_and_keeps_store_intact(store, data, match):
    c = store.create_conversation()
    with pytest.raises(FolioError, match=match):
        store.import_json(data)
    assert [x.id for x in store.list_conversations()] == [c]


def test_generating_from_dead_process_becomes_interrupted_on_open(store):
    c = store.create_conversation()
    store.add_message(c, "user", "q")
    m = store.begin_stream(c)
    with Store() as other:  # the stream of a live process (this one) is left alone
        assert other.messages(c)[-1].state == "generating"
    store._db.execute("UPDATE messages SET stream_pid = 2147483000 WHERE id = ?", (m,))  # no such process
    with Store() as other:
        assert other.messages(c)[-1].state == "interrupted"


def test_corrupt_file_is_moved_aside_and_store_starts_fresh():
    path = paths.data_dir() / "folio.sqlite3"
    junk = b"this is not sqlite at all" * 100
    path.write_bytes(junk)
    s = Store()
    assert "damaged" in s.notice and str(s.moved_to) in s.notice
    assert s.moved_to.read_bytes() == junk  # kept, byte for byte
    assert s.list_conversations() == []
    s.create_conversation()
    s.close()
    # A second bad file gets its own name: nothing is overwritten.
    first = s.moved_to
    path.write_bytes(junk + b"2")
    s2 = Store()
    assert s2.moved_to != first and first.exists() and s2.moved_to.exists()
    s2.close()


def test_damaged_pages_are_detected():
    s = Store()
    c = s.create_conversation()
    for i in range(200):
        s.add_message(c, "user", f"message {i} " + "x" * 500)
    s.close()
    path = s.path
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * 4096
    data[3 * 4096:6 * 4096] = b"\xff" * (3 * 4096)  # smash interior b-tree pages
    path.write_bytes(bytes(data))
    s2 = Store()
    assert s2.notice and "damaged" in s2.notice
    assert s2.moved_to.read_bytes() == bytes(data)
    s2.close()


def test_newer_schema_is_moved_aside():
    path = paths.data_dir() / "folio.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE future (x)")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    db.commit()
    db.close()
    s = Store()
    assert "newer version of Folio" in s.notice
    check = sqlite3.connect(s.moved_to)
    assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 5
    check.close()
    assert s.list_conversations() == []
    s.close()


def test_full_disk_gives_clear_message_and_loses_nothing(store, monkeypatch):
    c = store.create_conversation()
    u = store.add_message(c, "user", "keep me")
    m = store.begin_stream(c)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is now "full"
    big = "y" * 200_000
    with pytest.raises(StoreError, match="disk is full"):
        store.add_message(c, "user", big)
    monkeypatch.setattr("app.store.time.monotonic", lambda: 10**9)  # due for a write
    store.update_stream(m, big)  # called from a token slot: keeps the text, never raises
    assert store.messages(c)[-1].content == big
    with pytest.raises(StoreError, match="disk is full"):
        store.finish_message(m, big)
    assert [x.id for x in store.messages(c)] == [u, m]
    assert store.messages(c)[-1].content == big  # still held in memory, not dropped
    store._db.execute("PRAGMA max_page_count = 1073741823")  # space freed: the retry succeeds
    store.finish_message(m, big)
    assert raw(store, "SELECT content, state FROM messages WHERE id = ?", (m,))[0] == (big, "complete")
    assert raw(store, "SELECT content FROM messages WHERE id = ?", (u,))[0][0] == "keep me"
