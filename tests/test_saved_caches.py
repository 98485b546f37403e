"""Saved KV caches: round trip into a session, model/policy changes, LRU cap, damage, full disk; bench reopen."""

import errno
import json
import os
from types import SimpleNamespace

import pytest

from app import paths
from app.engine import loader
from app.engine.session import ChatSession, GenParams
from app.saved_caches import SavedCacheError, SavedCaches, model_key

GREEDY = GenParams(max_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def loaded(model_dir):
    return loader.load(str(model_dir("llama")))


def answer(session, messages):
    return "".join(session.generate(messages, GREEDY))


def turn_one(loaded, kv="fp16"):
    s = ChatSession(loaded, kv_mode=kv)
    first = [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 8}]
    reply = answer(s, first)
    return s, first + [{"role": "assistant", "content": reply}, {"role": "user", "content": "And then?"}]


@pytest.mark.parametrize("kv", ["fp16", "int4"])
def test_restored_cache_answers_like_a_cold_prefill(loaded, kv):
    s, follow_up = turn_one(loaded, kv)
    saved = SavedCaches(limit_gb=1)
    assert saved.save_session(s, 7)
    assert saved.cache_path(7).exists() and saved.total_bytes() > 0

    reopened = ChatSession(loaded, kv_mode=kv)
    n = SavedCaches(limit_gb=1).restore(reopened, 7)  # a new instance: the index is on disk
    assert n == len(s.cache_tokens) > 0
    assert [type(c) for c in reopened.cache] == [type(c) for c in s.cache]
    warm = answer(reopened, follow_up)
    assert reopened.stats.cached_tokens > n // 2  # most of the prompt came from disk, not prefill
    # The restored cache behaves exactly like the live one it was saved from.
    assert answer(s, follow_up) == warm
    assert s.stats.cached_tokens == reopened.stats.cached_tokens
    if kv == "fp16":  # and, unquantized, like prefilling everything again
        cold = ChatSession(loaded, kv_mode=kv)
        assert answer(cold, follow_up) == warm
        assert cold.stats.cached_tokens == 0


def test_a_cache_saved_in_another_kv_mode_is_not_restored(loaded):
    s, _ = turn_one(loaded, "int4")
    saved = SavedCaches(limit_gb=1)
    assert saved.save_session(s, 3)
    assert saved.restore(ChatSession(loaded, kv_mode="fp16"), 3) == 0
    assert saved.restore(ChatSession(loaded, kv_mode="int8"), 3) == 0
    assert saved.restore(ChatSession(loaded, kv_mode="int4"), 3) > 0


def test_ignored_when_model_or_policy_changed(loaded, model_dir):
    s, _ = turn_one(loaded)
    saved = SavedCaches(limit_gb=1)
    key = model_key(loaded)
    saved.save(1, s.cache, s.cache_tokens, model_id=key, policy="fp16")
    assert saved.load(1, model_id=key, policy="int4") is None
    assert saved.load(1, model_id="other-model@0", policy="fp16") is None
    # Same name, changed config (or weights): a different key.
    edited = SimpleNamespace(model_id=loaded.model_id, path=loaded.path, config={**loaded.config, "rope_theta": 5.0})
    assert model_key(edited) != key
    other = loader.load(str(model_dir("llama", hidden_size=128)))
    assert saved.restore(ChatSession(other), 1) == 0
    # Ignored, not destroyed: switching back finds it again.
    caches, tokens = saved.load(1, model_id=key, policy="fp16")
    assert tokens == s.cache_tokens and caches[0].offset == len(tokens)


def test_least_recently_used_is_evicted_over_the_cap(loaded):
    s, _ = turn_one(loaded)
    key = model_key(loaded)
    probe = SavedCaches(limit_gb=1)
    probe.save(99, s.cache, s.cache_tokens, model_id=key, policy="fp16")
    one = probe.total_bytes()
    probe.discard(99)

    saved = SavedCaches(limit_gb=2.5 * one / 1024**3)  # room for two
    for conv in (1, 2):
        saved.save(conv, s.cache, s.cache_tokens, model_id=key, policy="fp16")
    assert saved.load(1, model_id=key, policy="fp16") is not None  # 1 is now more recent than 2
    saved.save(3, s.cache, s.cache_tokens, model_id=key, policy="fp16")
    assert sorted(saved.entries) == [1, 3]
    assert not saved.cache_path(2).exists() and not saved.tokens_path(2).exists()
    assert saved.total_bytes() <= saved.limit_bytes
    assert sorted(SavedCaches(limit_gb=1).entries) == [1, 3]

    tiny = SavedCaches(limit_gb=one / 2 / 1024**3)  # one cache alone is over the cap: not kept
    assert tiny.save(4, s.cache, s.cache_tokens, model_id=key, policy="fp16") is False
    assert not tiny.cache_path(4).exists()
    off = SavedCaches(limit_gb=0)
    assert off.save(5, s.cache, s.cache_tokens, model_id=key, policy="fp16") is False


def test_limit_comes_from_settings():
    from app.settings import Settings

    saved = SavedCaches()
    assert saved.folder == paths.kv_cache_dir()
    Settings().set("saved_cache_limit_gb", 3.0)
    assert saved.limit_bytes == 3 * 1024**3  # a change in Settings applies without a restart


def test_damaged_files_are_ignored_and_discarded(loaded):
    s, _ = turn_one(loaded)
    key = model_key(loaded)
    saved = SavedCaches(limit_gb=1)
    saved.save(1, s.cache, s.cache_tokens, model_id=key, policy="fp16")
    saved.cache_path(1).write_bytes(b"garbage")
    assert saved.load(1, model_id=key, policy="fp16") is None
    assert 1 not in saved.entries and not saved.tokens_path(1).exists()

    saved.save(2, s.cache, s.cache_tokens, model_id=key, policy="fp16")
    saved.tokens_path(2).write_bytes(b"\x01\x00\x00\x00")  # token ids that do not match the cache
    assert saved.load(2, model_id=key, policy="fp16") is None

    (saved.folder / "index.json").write_text("{not json")
    (saved.folder / ".tmp-123-conv-9.safetensors").write_bytes(b"debris of a crash")
    fresh = SavedCaches(limit_gb=1)
    assert fresh.entries == {} and not (saved.folder / ".tmp-123-conv-9.safetensors").exists()


def test_full_disk_keeps_the_previous_saved_cache(loaded, monkeypatch):
    s, follow_up = turn_one(loaded)
    saved = SavedCaches(limit_gb=1)
    assert saved.save_session(s, 1)
    before = saved.cache_path(1).read_bytes()
    answer(s, follow_up)  # the conversation moves on; its next save hits a full disk

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("app.saved_caches._write_synced", full)
    with pytest.raises(SavedCacheError, match="disk is full.*conversation itself is saved"):
        saved.save_session(s, 1)
    assert saved.cache_path(1).read_bytes() == before
    assert not [f for f in saved.folder.iterdir() if f.name.startswith(".tmp-")]
    assert SavedCaches(limit_gb=1).restore(ChatSession(loaded), 1) > 0
    monkeypatch.undo()

    # The cache file itself hits a full device: every write to /dev/full fails with ENOSPC.
    if not os.path.exists("/dev/full"):
        return
    for f in (f".tmp-{os.getpid()}-conv-1.safetensors", f".tmp-{os.getpid()}-conv-1.safetensors.part.safetensors"):
        (saved.folder / f).symlink_to("/dev/full")
    monkeypatch.setattr("shutil.disk_usage", lambda p: SimpleNamespace(total=10**9, used=10**9, free=0))
    with pytest.raises(SavedCacheError, match="disk is full"):
        saved.save_session(s, 1)
    assert saved.cache_path(1).read_bytes() == before
    assert not [f for f in saved.folder.iterdir() if f.name.startswith(".tmp-")]


def test_keep_only_drops_deleted_conversations(loaded):
    s, _ = turn_one(loaded)
    saved = SavedCaches(limit_gb=1)
    for conv in (1, 2, 3):
        saved.save_session(s, conv)
    saved.keep_only([2])
    assert list(saved.entries) == [2]
    assert sorted(f.name for f in saved.folder.iterdir()) == ["conv-2.safetensors", "conv-2.tokens", "index.json"]


def test_bench_reopen_reports_cold_and_saved_ttft(model_dir, capsys):
    from app.cli import main

    assert main(["bench", "reopen", "--model", str(model_dir("llama")), "--kv", "fp16", "--context", "600",
                 "--repeats", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cold_ttft_s"] > 0 and out["saved_ttft_s"] > 0
    assert out["context"] >= 600 and out["saved_prefilled_tokens"] < 60
    assert out["cold_prefilled_tokens"] >= 600
    assert out["saved_cache_bytes"] > 0


def test_the_app_worker_saves_after_a_turn_and_restores_on_reopen(model_dir, qtbot):
    from app.ui.worker import Engine

    def turn(messages):
        engine = Engine()
        done = []
        engine.worker.finished.connect(lambda job, text, stats: done.append((text, stats)))
        try:
            engine.load(str(model_dir("llama")))
            engine.generate(5, messages, {"max_tokens": 8, "temperature": 0.0}, kv_mode="fp16")
            qtbot.waitUntil(lambda: bool(done), timeout=60_000)
        finally:
            engine.shutdown()
        return done[0]

    first = [{"role": "user", "content": "Folio keeps the KV cache in int4. " * 6}]
    text, stats = turn(first)
    assert stats["cached_tokens"] == 0
    assert SavedCaches(limit_gb=1).entries[5].tokens > 0
    # A new engine, as after quitting and reopening the app: the conversation's cache comes from disk.
    _, stats = turn(first + [{"role": "assistant", "content": text}, {"role": "user", "content": "More?"}])
    assert stats["cached_tokens"] > stats["prompt_tokens"] // 2

    engine = Engine()  # deleting the conversation forgets its saved cache too
    try:
        engine.forget(5)
        qtbot.waitUntil(lambda: 5 not in SavedCaches(limit_gb=1).entries, timeout=10_000)
    finally:
        engine.shutdown()
    assert not SavedCaches(limit_gb=1).cache_path(5).exists()


def test_bench_reopen_bad_model_is_one_line(tmp_path, capsys):
    from app.cli import main

    assert main(["bench", "reopen", "--model", str(tmp_path / "missing"), "--json"]) == 1
    out = capsys.readouterr()
    assert out.out.strip().startswith("folio bench reopen: No model folder") and "Traceback" not in out.err
    assert len(out.out.strip().splitlines()) == 1
