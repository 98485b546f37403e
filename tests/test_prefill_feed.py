"""app.engine.prefill.feed: the chunk loop leaves the cache exactly as chunk-by-chunk model calls
do, reports each chunk after it finished, and stops between chunks without losing one."""

import mlx.core as mx
import pytest

from app.engine import kvcache, loader, prefill


@pytest.fixture(scope="module")
def loaded(model_dir):
    return loader.load(str(model_dir("llama")))


def plain(loaded, cache, tokens, chunk):
    for i in range(0, len(tokens), chunk):
        loaded.model(mx.array(tokens[i : i + chunk])[None], cache=cache)
        mx.eval([c.state for c in cache])


@pytest.mark.parametrize("mode", ["fp16", "int4"])
@pytest.mark.parametrize("n, chunk", [(1, 8), (37, 8), (40, 8), (50, 64)])
def test_feed_matches_the_plain_loop(loaded, mode, n, chunk):
    tokens = [(7 * i + 3) % 200 for i in range(n)]
    fed, ref = kvcache.make_cache(loaded, mode), kvcache.make_cache(loaded, mode)
    seen = []
    assert prefill.feed(loaded.model, fed, tokens, chunk, on_chunk=seen.append) == n
    plain(loaded, ref, tokens, chunk)
    assert seen == [min(n, chunk * (i + 1)) for i in range(-(-n // chunk))]
    assert [c.offset for c in fed] == [c.offset for c in ref] == [n] * len(fed)
    # The next token's logits through each cache: the same computation, so the same numbers.
    nxt = mx.array([[5]])
    a, b = loaded.model(nxt, cache=fed), loaded.model(nxt, cache=ref)
    assert mx.array_equal(a, b).item()


def test_stop_between_chunks_keeps_and_counts_the_finished_ones(loaded):
    cache = kvcache.make_cache(loaded, "int4")
    seen = []
    # Asked before each chunk: the third ask says stop.
    asks = iter([False, False, True])
    done = prefill.feed(loaded.model, cache, list(range(100)), 16, lambda: next(asks), seen.append)
    assert done == 32 and seen == [16, 32]
    assert all(c.offset == 32 for c in cache)


def test_stop_before_anything_feeds_nothing(loaded):
    cache = kvcache.make_cache(loaded, "fp16")
    assert prefill.feed(loaded.model, cache, list(range(10)), 4, lambda: True) == 0
    assert all(c.offset == 0 for c in cache)


def test_errors_propagate(loaded):
    cache = kvcache.make_cache(loaded, "fp16")

    def broken(*a, **k):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        prefill.feed(broken, cache, list(range(10)), 4)
