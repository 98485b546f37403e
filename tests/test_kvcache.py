"""The compressed KV cache: byte formula, block growth, sliding-window ring, trim, save/restore,
and int4/auto generation end to end on tiny random models."""

import os

import mlx.core as mx
import pytest
from mlx_lm.models.cache import trim_prompt_cache

from app.engine import attention, kvcache, layout, loader, policy
from app.engine.errors import FolioError
from app.engine.kvcache import CacheFileError, QuantizedCache
from app.engine.layout import LayerSpec, Quant
from app.engine.session import ChatSession, GenParams


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from model_factory import make_model

    return loader.load(str(make_model(tmp_path_factory.mktemp("llama"), "llama")))


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    from model_factory import make_model

    return loader.load(str(make_model(tmp_path_factory.mktemp("gemma"), "gemma3_text")))


@pytest.fixture
def seed():
    s = int.from_bytes(os.urandom(4), "little")
    mx.random.seed(s)
    return s


def _kv(L, H=2, D=64):
    return mx.random.normal((1, H, L, D)), mx.random.normal((1, H, L, D))


def test_bytes_per_token_is_the_formula(llama):
    shape = llama.shape
    per_vector = shape.head_dim * 4 // 8 + 2 * 2 * shape.head_dim // 64  # codes + fp16 scale and bias
    assert kvcache.bytes_per_token(shape, "int4") == shape.kv_layers * 2 * shape.n_kv_heads * per_vector
    ratio = kvcache.fp16_bytes_per_token(shape) / kvcache.bytes_per_token(shape, "int4")
    assert ratio == pytest.approx(16 / 4.5)
    caches = kvcache.make_cache(llama, "int4")
    llama.model(mx.array([list(range(1, 40))]), cache=caches)
    quant = [c for c in caches if isinstance(c, QuantizedCache)]
    assert len(quant) == shape.kv_layers
    means = 2 * shape.n_kv_heads * shape.head_dim * 4  # the centering vectors, float32, once per layer
    for c in quant:
        assert c.nbytes == c.slots * c.spec.bytes_per_token(shape.n_kv_heads, shape.head_dim) + means
    assert kvcache.describe(caches, "int4")["kv_bits_per_element"] == pytest.approx(4.5)


def test_grows_in_preallocated_blocks(seed):
    c = QuantizedCache(LayerSpec(Quant(4, 64), Quant(4, 64)))
    sizes = set()
    for _ in range(300):
        c.update_and_fetch(*_kv(1))
        sizes.add(c.slots)
    assert sizes == {256, 512} and c.offset == 300
    c.update_and_fetch(*_kv(1000))
    assert c.slots % c.step == 0 and c.offset <= c.slots < c.offset + max(c.step, c.offset // 8 + c.step)


@pytest.mark.parametrize("chunks", [[5, 40, 1, 1, 1, 70, 1, 33] + [1] * 12, [100, 1, 1, 31, 1]])
def test_window_ring_matches_full_history(chunks, seed, monkeypatch):
    """A window layer's ring gives the same attention as the whole history under a window mask."""
    monkeypatch.setattr(kvcache, "EXACT_CHUNK", False)
    monkeypatch.setattr(kvcache, "TAIL", 0)  # the full history quantized, token by token, like the ring
    W, Hkv, R, D = 32, 2, 3, 64
    spec = LayerSpec(Quant(4, 64), Quant(8, 32))
    ring, full = QuantizedCache(spec, window=W), QuantizedCache(spec)
    for L in chunks:
        k, v = _kv(L, Hkv, D)
        view, _ = ring.update_and_fetch(k, v)
        full.update_and_fetch(k, v)
        q = mx.random.normal((1, Hkv * R, L, D))
        out = attention.attend(q, view, scale=0.3)
        n = full.offset
        kd = layout.dequantize(tuple(a[:, :, :n] for a in full.k), spec.k)
        vd = layout.dequantize(tuple(a[:, :, :n] for a in full.v), spec.v)
        qpos, kpos = mx.arange(n - L, n)[:, None], mx.arange(n)[None]
        mask = (kpos <= qpos) & (kpos > qpos - W)
        ref = mx.fast.scaled_dot_product_attention(q, kd, vd, scale=0.3, mask=mask)
        assert mx.allclose(out, ref, atol=1e-4).item(), f"after {ring.offset} tokens (seed {seed})"
        assert ring.slots <= W and ring.length == min(ring.offset, W)


@pytest.mark.parametrize("spec", ["k8g64rcv8g64rc", "k8g128rv8g64c"])
def test_rotation_and_centering_preserve_attention(spec, seed):
    """8-bit storage with rotation/centering stays within quantization error of exact attention."""
    s = policy.parse_spec(spec, 128)
    c = QuantizedCache(s)
    k, v = _kv(90, 2, 128)
    # A shared offset where centering is on: what it removes.
    k, v = k + 3.0 * s.k.center, v + 3.0 * s.v.center
    view, _ = c.update_and_fetch(k, v)
    q = mx.random.normal((1, 4, 1, 128))
    c2 = QuantizedCache(s)
    c2.update_and_fetch(k[:, :, :89], v[:, :, :89])
    view, _ = c2.update_and_fetch(k[:, :, 89:], v[:, :, 89:])
    out = attention.attend(q, view, scale=128**-0.5)
    ref = mx.fast.scaled_dot_product_attention(q, k, v, scale=128**-0.5)
    assert mx.abs(out - ref).max().item() < 0.03, f"seed {seed}"


def test_trim_then_refeed_equals_never_fed(llama, monkeypatch):
    monkeypatch.setattr(kvcache, "EXACT_CHUNK", False)
    toks = mx.array([list(range(3, 63))])
    a, b = kvcache.make_cache(llama, "int4"), kvcache.make_cache(llama, "int4")
    llama.model(toks[:, :30], cache=a)
    llama.model(toks[:, 30:50], cache=a)
    assert all(c.is_trimmable() for c in a)
    assert trim_prompt_cache(a, 10) == 10 and a[0].offset == 40
    out_a = llama.model(toks[:, 40:60], cache=a)
    llama.model(toks[:, :30], cache=b)
    out_b = llama.model(toks[:, 30:60], cache=b)
    assert mx.allclose(out_a[:, -20:], out_b[:, -20:], atol=1e-3).item()


def test_wrapped_window_layer_trims_only_as_far_as_its_undo_log(seed, monkeypatch):
    monkeypatch.setattr(kvcache, "REWIND", 4)
    c = QuantizedCache(LayerSpec(Quant(4, 64), Quant(4, 64)), window=16)
    c.update_and_fetch(*_kv(16))
    assert c.is_trimmable() and c.max_trim() == 16
    for _ in range(6):
        c.update_and_fetch(*_kv(1))
    assert c.is_trimmable() and c.max_trim() == 4
    assert kvcache.can_trim([c], 4) and not kvcache.can_trim([c], 5)
    assert c.trim(5) == 4 and c.offset == 18 and c.max_trim() == 0 and not c.is_trimmable()


# -- save and restore ------------------------------------------------------------------------------
def _state_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert type(x) is type(y) and x.offset == y.offset
        if isinstance(x, QuantizedCache):
            assert x.spec == y.spec and x.window == y.window
            for p, q in zip((*x.k, *x.v), (*y.k, *y.v)):
                assert p.dtype == q.dtype and mx.array_equal(p[:, :, : x.length], q[:, :, : y.length]).item()
        else:
            n = x.size()
            assert mx.array_equal(x.keys[:, :, :n], y.keys[:, :, :n]).item()


@pytest.mark.parametrize("mode", ["int4", "auto", "fp16"])
@pytest.mark.parametrize("which", ["llama", "gemma"])
def test_save_restore_round_trip_is_bit_exact(mode, which, request, tmp_path):
    loaded = request.getfixturevalue(which)
    caches = kvcache.make_cache(loaded, mode)
    toks = mx.array([list(range(5, 75))])  # 70 tokens: gemma's 32-token rings have wrapped
    loaded.model(toks[:, :50], cache=caches)
    loaded.model(toks[:, 50:], cache=caches)
    path = tmp_path / "conv.safetensors"
    kvcache.save_cache(caches, path, model_id=loaded.model_id, policy=mode)
    restored, tokens = kvcache.load_cache(path, model_id=loaded.model_id, policy=mode)
    assert tokens == 70
    _state_equal(caches, restored)
    nxt = mx.array([[9]])
    assert mx.array_equal(loaded.model(nxt, cache=caches), loaded.model(nxt, cache=restored)).item()


def test_mismatched_or_damaged_file_is_refused(llama, tmp_path):
    caches = kvcache.make_cache(llama, "int4")
    llama.model(mx.array([[1, 2, 3]]), cache=caches)
    path = tmp_path / "c.safetensors"
    kvcache.save_cache(caches, path, model_id="m1", policy="int4")
    with pytest.raises(CacheFileError, match="made with 'm1'"):
        kvcache.load_cache(path, model_id="m2", policy="int4")
    with pytest.raises(CacheFileError, match="KV policy 'int4'"):
        kvcache.load_cache(path, model_id="m1", policy="auto")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a cache")
    with pytest.raises(CacheFileError, match="cannot be read"):
        kvcache.load_cache(bad, model_id="m1", policy="int4")
    with pytest.raises(CacheFileError, match="cannot be read"):
        kvcache.load_cache(tmp_path / "missing.safetensors", model_id="m1", policy="int4")
    other = tmp_path / "other.safetensors"
    mx.save_safetensors(str(other), {"x": mx.zeros(2)}, {"format": "something"})
    with pytest.raises(CacheFileError, match="not a Folio cache"):
        kvcache.load_cache(other, model_id="m1", policy="int4")


# -- end to end ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["int4", "auto"])
@pytest.mark.parametrize("which", ["llama", "gemma"])
def test_generation_end_to_end(mode, which, request):
    loaded = request.getfixturevalue(which)
    s = ChatSession(loaded, kv_mode=mode, prefill_chunk=16)
    msgs = [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 3}]
    text = "".join(s.generate(msgs, GenParams(max_tokens=12, temperature=0.0)))
    assert s.stats.generated_tokens > 0 and isinstance(text, str)
    assert s.stats.kv_policy.startswith(mode) and s.stats.attention_path in ("reference", "metal", "cuda")
    # The prompt is stored quantized; the decoded tokens sit in the exact tail at the model's
    # precision (float32 here) until TAIL of them are quantized together, and the stats say so.
    c0 = next(c for c in s.cache if c.window is None)  # sliding-window layers keep no tail
    stored, tail = c0.offset - c0.tail_n, c0.tail_n
    assert 0 < tail < kvcache.TAIL
    assert s.stats.kv_bits_per_element <= (stored * 6.5 + tail * 32) / (stored + tail) + 1e-9
    assert all(isinstance(c, QuantizedCache) for c in s.cache)
    # A turn that extends the conversation reuses the cache: only the new tokens are prefilled.
    seen = list(s.cache_tokens)
    "".join(s.generate_tokens(seen + [5, 6, 7], GenParams(max_tokens=4, temperature=0.0)))
    assert s.stats.cached_tokens == len(seen)


def test_model_that_bypasses_the_seam_falls_back_to_fp16(tmp_path, monkeypatch, caplog):
    from mlx_lm.models import llama as llama_module
    from model_factory import make_model

    def plain(queries, keys, values, cache, scale, mask, sinks=None):
        return mx.fast.scaled_dot_product_attention(queries, keys, values, scale=scale, mask=mask)

    monkeypatch.setattr(llama_module, "scaled_dot_product_attention", plain)
    loaded = loader.load(str(make_model(tmp_path / "m", "llama")))
    caches = kvcache.make_cache(loaded, "int4")
    assert not any(isinstance(c, QuantizedCache) for c in caches)
    assert loaded.extra["kv_route_error"]
    assert kvcache.describe(caches, "int4")["kv_policy"] == "fp16"


def test_unknown_mode_is_a_clear_error(llama):
    with pytest.raises(FolioError, match="not one of"):
        kvcache.make_cache(llama, "int3")
