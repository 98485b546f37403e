"""A wrapped sliding-window ring rewinds through its undo log: exact trims, refusal past the log,
and ChatSession reusing a Gemma cache across turns."""

import mlx.core as mx
import pytest

from app.engine import kvcache, loader
from app.engine.kvcache import QuantizedCache
from app.engine.session import ChatSession, GenParams

GREEDY = GenParams(max_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def gemma(model_dir):
    return loader.load(str(model_dir("gemma3_text")))  # sliding_window=32


def _tokens(n, start=3):
    return [start + (7 * i) % 200 for i in range(n)]


def _feed(loaded, caches, chunks):
    """Feed each chunk (a token list) in turn; the logits of the last one."""
    out = None
    for c in chunks:
        out = loaded.model(mx.array([c]), cache=caches)
        mx.eval(out, [x.state for x in caches])
    return out


def _windowed(caches):
    return [c for c in caches if isinstance(c, QuantizedCache) and c.window]


@pytest.mark.parametrize("tail", [64, 8])  # 64 >= the window: the rings keep no exact tail; 8: they do
@pytest.mark.parametrize("mode", ["int4", "auto"])
@pytest.mark.parametrize("k", [1, 5, 19])
def test_decode_rewind_is_exact(gemma, mode, k, tail, monkeypatch):
    """Trim k decoded tokens off a wrapped ring, re-feed others: bit-equal to never having fed them."""
    monkeypatch.setattr(kvcache, "REWIND", 20)  # k = 19 is REWIND - 1
    monkeypatch.setattr(kvcache, "TAIL", tail)
    head, steps, other = _tokens(40), _tokens(20, 50), _tokens(6, 90)
    a = kvcache.make_cache(gemma, mode)
    assert _windowed(a), "gemma's window layers should be compressed"
    _feed(gemma, a, [head] + [[t] for t in steps])
    assert all(c.offset > c.window for c in _windowed(a))
    # The log undoes REWIND ring positions; tokens still in an exact tail come off without it.
    unlogged = max(c.tail_n for c in _windowed(a))
    assert (unlogged > 0) == (tail < 32)
    assert kvcache.can_trim(a, k) and not kvcache.can_trim(a, 21 + unlogged)
    assert [c.trim(k) for c in a] == [k] * len(a)
    b = kvcache.make_cache(gemma, mode)
    _feed(gemma, b, [head] + [[t] for t in steps[: len(steps) - k]])
    # Which tokens are still exact depends on when each cache last flushed its tail (a flushed
    # before the trim, b did not), and exact tokens change what the model computes next: quantize
    # both tails first, then the states must be the same bit for bit.
    for c in a + b:
        if isinstance(c, QuantizedCache):
            c.flush()
    out_a = _feed(gemma, a, [other[:1], other[1:]])
    out_b = _feed(gemma, b, [other[:1], other[1:]])
    assert mx.array_equal(out_a, out_b).item()
    for x, y in zip(_windowed(a), _windowed(b)):
        assert x.offset == y.offset
        for p, q in zip((*x.k, *x.v), (*y.k, *y.v)):
            assert mx.array_equal(p[:, :, : x.length], q[:, :, : y.length]).item()


def test_rewind_into_a_chunk_longer_than_the_window(gemma):
    """A chunk that evicts its own tokens logs them too; the trimmed cache matches a fresh one."""
    toks = _tokens(90)
    a = kvcache.make_cache(gemma, "int4")
    _feed(gemma, a, [toks[:40], toks[40:]])  # positions 40..89: 50 > window 32
    assert kvcache.can_trim(a, 20)
    assert [c.trim(20) for c in a] == [20] * len(a)
    other = _tokens(5, 120)
    out_a = _feed(gemma, a, [other])
    b = kvcache.make_cache(gemma, "int4")
    out_b = _feed(gemma, b, [toks[:40], toks[40:70], other])
    assert mx.allclose(out_a, out_b, atol=1e-3).item()


def test_log_is_bounded_and_counted(gemma, monkeypatch):
    monkeypatch.setattr(kvcache, "REWIND", 8)
    caches = kvcache.make_cache(gemma, "int4")
    _feed(gemma, caches, [_tokens(30)] + [[t] for t in _tokens(12, 60)])
    shape = gemma.shape
    for c in caches:
        per_token = c.spec.bytes_per_token(shape.n_kv_heads, shape.head_dim)
        means = sum(m.nbytes for m in (c.k_mean, c.v_mean) if m is not None)
        log = kvcache.REWIND if c.window else 0  # the undo log: REWIND tokens per window layer
        tail = 0 if c.window else 2 * c.tail_k.nbytes  # full-attention layers' exact tail, K and V
        assert c.nbytes == (c.slots + log) * per_token + means + tail
    assert [c.max_trim() for c in _windowed(caches)] == [8] * len(_windowed(caches))
    # Past the log a trim takes back what it can undo exactly, and can_trim refuses.
    assert not kvcache.can_trim(caches, 9)
    assert _windowed(caches)[0].trim(9) == 8


def test_restored_cache_cannot_rewind_until_it_writes(gemma, tmp_path):
    caches = kvcache.make_cache(gemma, "int4")
    _feed(gemma, caches, [_tokens(40)])
    kvcache.save_cache(caches, tmp_path / "c.safetensors", model_id="m", policy="p")
    back, _ = kvcache.load_cache(tmp_path / "c.safetensors", model_id="m", policy="p")
    for x, y in zip(_windowed(caches), _windowed(back)):
        for p, q in zip((*x.k, *x.v), (*y.k, *y.v)):
            assert mx.array_equal(p[:, :, : x.length], q[:, :, : y.length]).item()
    assert not kvcache.can_trim(back, 1)
    _feed(gemma, back, [[5], [6]])
    assert kvcache.can_trim(back, 2) and not kvcache.can_trim(back, 3)


def _turns(gemma, mode, back):
    """Turn 1 answers a prompt; turn 2 drops the answer's last `back` tokens and asks more.

    The comparison session generates only up to the kept tokens, so its turn 2 needs no rewind
    and feeds the same chunks: int4 on this sharp tiny model is far from fp16, so only the same
    chunking can be compared exactly.
    """
    first = _tokens(40)
    s = ChatSession(gemma, kv_mode=mode)
    list(s.generate_tokens(first, GREEDY))
    kept = s.cache_tokens[: len(s.cache_tokens) - back]
    unfed = len(first) + len(s.generated) - len(s.cache_tokens)
    same = ChatSession(gemma, kv_mode=mode)
    short = GenParams(max_tokens=len(kept) - len(first) + unfed, temperature=0.0)
    list(same.generate_tokens(first, short))
    assert same.cache_tokens == kept
    second = kept + _tokens(6, 150)
    list(s.generate_tokens(second, GREEDY))
    list(same.generate_tokens(second, GREEDY))
    return s, same


@pytest.mark.parametrize("mode", ["int4", "auto"])
def test_second_turn_rewinds_a_wrapped_ring(gemma, mode):
    s, same = _turns(gemma, mode, back=3)
    assert s.stats.cached_tokens == same.stats.cached_tokens > 32  # the ring was rewound, not rebuilt
    assert s.generated == same.generated


def test_rewind_past_the_log_prefills_afresh(gemma, monkeypatch):
    monkeypatch.setattr(kvcache, "REWIND", 2)
    s = ChatSession(gemma, kv_mode="int4")
    list(s.generate_tokens(_tokens(40), GREEDY))
    second = s.cache_tokens[:-5] + _tokens(6, 150)
    list(s.generate_tokens(second, GREEDY))
    assert s.stats.cached_tokens == 0
    fresh = ChatSession(gemma, kv_mode="int4")
    list(fresh.generate_tokens(second, GREEDY))
    assert s.generated == fresh.generated
