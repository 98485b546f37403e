"""The exact tail: a full-attention layer keeps its newest decode tokens unquantized and
quantizes them TAIL at a time. Attention over it matches an fp32 oracle, the codes it flushes are
the ones per-token quantization stores, and trim, save and a prefill chunk all see every token."""

import mlx.core as mx
import numpy as np
import pytest

from app import selftest
from app.engine import attention, kvcache, rotation
from app.engine.kvcache import QuantizedCache
from app.engine.layout import LayerSpec, Quant

SPECS = {
    "int4": LayerSpec(Quant(4, 64, True, True), Quant(4, 64, True, True)),
    "auto": LayerSpec(Quant(8, 128, True, True), Quant(4, 64, True, True)),
    "plain": LayerSpec(Quant(4, 32), Quant(8, 64)),
}
B, HKV, G, D = 1, 2, 4, 128


def _tokens(n, seed):
    key = mx.random.key(seed)
    k, v = (mx.random.normal((B, HKV, n, D), key=mx.random.split(key)[i]).astype(mx.float16) for i in range(2))
    return k + 0.7, v - 0.4  # an offset for the centering to remove


def _oracle(q, view: attention.Compressed):
    """fp32 attention over the dequantized slots and the tail as stored, transforms undone."""
    spec = view.spec
    kw = dict(scale=D**-0.5, length=view.length, k_bits=spec.k.bits, v_bits=spec.v.bits, k_group=spec.k.group,
              v_group=spec.v.group)
    qr = rotation.rotate(q) if spec.k.rotate else q
    out = selftest.dequantized_attention(qr, view.k, view.v, tail=view.tail, **kw)
    return attention.uncenter_unrotate(out, view.v_mean, spec.v.rotate)


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("spec", list(SPECS))
def test_decode_through_the_tail_matches_the_oracle(spec, compiled, monkeypatch):
    monkeypatch.setattr(kvcache, "TAIL", 8)
    monkeypatch.setattr(attention, "COMPILE", compiled)
    c = QuantizedCache(SPECS[spec])
    c.update_and_fetch(*_tokens(40, 1))
    k, v = _tokens(21, 2)
    for i in range(21):  # two flushes on the way
        view, _ = c.update_and_fetch(k[:, :, i : i + 1], v[:, :, i : i + 1])
        assert view.tail is not None and view.tail.n == i % 8 + 1 and view.length == 40 + i // 8 * 8
        q = mx.random.normal((B, HKV * G, 1, D), key=mx.random.key(i)).astype(mx.float16)
        got = attention.attend(q, view, D**-0.5).astype(mx.float32)
        want = _oracle(q, view).astype(mx.float32)
        assert mx.abs(got - want).max().item() < 2e-3 * max(1.0, mx.abs(want).max().item()), i
    assert c.offset == 61 and c.tail_n == 5


def test_the_tail_is_read_exactly(monkeypatch):
    """The newest tokens are not quantized: attention to a tail token alone returns its value."""
    c = QuantizedCache(SPECS["int4"])
    c.update_and_fetch(*_tokens(40, 3))
    k, v = _tokens(1, 4)
    view, _ = c.update_and_fetch(k * 30, v)  # a key the query below picks out: softmax ~ one-hot
    q = mx.repeat(k * 30, G, axis=1).astype(mx.float32)
    out = attention.attend(q, view, 1.0)
    assert np.allclose(np.array(out[0, ::G, 0]), np.array(v[0, :, 0].astype(mx.float32)), atol=1e-3)


@pytest.mark.parametrize("spec", list(SPECS))
def test_flushed_codes_are_those_of_per_token_quantizing(spec, monkeypatch):
    prompt, (k, v) = _tokens(40, 5), _tokens(19, 6)
    caches = []
    for tail in (8, 0):
        monkeypatch.setattr(kvcache, "TAIL", tail)
        c = QuantizedCache(SPECS[spec])
        c.update_and_fetch(*prompt)
        for i in range(19):
            c.update_and_fetch(k[:, :, i : i + 1], v[:, :, i : i + 1])
        c.flush()
        caches.append(c)
    a, b = caches
    assert a.tail_n == 0 and a.offset == b.offset == 59
    for x, y in zip((*a.k, *a.v), (*b.k, *b.v)):
        np.testing.assert_array_equal(np.array(x[:, :, :59]), np.array(y[:, :, :59]))


def test_trim_prefill_and_save_see_every_token(monkeypatch, tmp_path):
    monkeypatch.setattr(kvcache, "TAIL", 8)
    spec = SPECS["int4"]
    prompt, (k, v) = _tokens(40, 7), _tokens(12, 8)

    def decoded(n):
        c = QuantizedCache(spec)
        c.update_and_fetch(*prompt)
        for i in range(n):
            c.update_and_fetch(k[:, :, i : i + 1], v[:, :, i : i + 1])
        return c

    # Trim within the tail, then past it into the quantized slots: the same as never decoding them.
    for keep in (10, 7):
        c, ref = decoded(12), decoded(keep)
        assert c.trim(12 - keep) == 12 - keep and c.offset == ref.offset == 40 + keep
        c.flush(), ref.flush()
        for x, y in zip((*c.k, *c.v), (*ref.k, *ref.v)):
            np.testing.assert_array_equal(np.array(x[:, :, : 40 + keep]), np.array(y[:, :, : 40 + keep]))
    # A prefill chunk after decoding attends to every earlier token quantized.
    c = decoded(5)
    view, _ = c.update_and_fetch(*_tokens(6, 9))
    assert c.tail_n == 0 and view.tail is None and view.length == c.offset == 51
    # Saving writes the tail's tokens too.
    c = decoded(5)
    kvcache.save_cache([c], tmp_path / "c.safetensors", model_id="m", policy="int4")
    [back], tokens = kvcache.load_cache(tmp_path / "c.safetensors", model_id="m", policy="int4")
    assert tokens == back.offset == 45 and back.tail_n == 0 and c.tail_n == 0
    for x, y in zip((*c.k, *c.v), (*back.k, *back.v)):
        np.testing.assert_array_equal(np.array(x[:, :, :45]), np.array(y[:, :, :45]))


def test_stats_count_the_tail_at_its_precision(monkeypatch):
    monkeypatch.setattr(kvcache, "TAIL", 8)
    c = QuantizedCache(SPECS["int4"])
    c.update_and_fetch(*_tokens(40, 12))
    assert kvcache.describe([c], "int4")["kv_bits_per_element"] == 4.5
    k, v = _tokens(4, 13)
    for i in range(4):
        c.update_and_fetch(k[:, :, i : i + 1], v[:, :, i : i + 1])
    assert kvcache.describe([c], "int4")["kv_bits_per_element"] == (40 * 4.5 + 4 * 16) / 44


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("spec", ["int4", "auto"])
def test_a_ring_with_a_tail_sees_exactly_its_window(spec, compiled, monkeypatch):
    """A sliding-window layer's tail: the ring's oldest entries drop out of sight as the tail
    fills (Compressed.skip), then the flush overwrites them. Against an oracle built from a
    full-history cache that quantized every token at once."""
    monkeypatch.setattr(kvcache, "TAIL", 8)
    monkeypatch.setattr(attention, "COMPILE", compiled)
    W = 32
    ring = QuantizedCache(SPECS[spec], window=W)
    prompt, (k, v) = _tokens(40, 14), _tokens(45, 15)
    ring.update_and_fetch(*prompt)
    monkeypatch.setattr(kvcache, "TAIL", 0)
    full = QuantizedCache(SPECS[spec])
    full.update_and_fetch(*prompt)
    for i in range(45):
        ki, vi = k[:, :, i : i + 1], v[:, :, i : i + 1]
        monkeypatch.setattr(kvcache, "TAIL", 0)
        full.update_and_fetch(ki, vi)
        monkeypatch.setattr(kvcache, "TAIL", 8)
        view, _ = ring.update_and_fetch(ki, vi)
        offset, stored = ring.offset, ring.offset - ring.tail_n
        assert view.tail.n == ring.tail_n > 0 and view.length == min(stored, W)
        assert (view.skip or (0, 0))[1] == max(0, offset - W) - max(0, stored - W)
        q = mx.random.normal((B, HKV * G, 1, D), key=mx.random.key(100 + i)).astype(mx.float16)
        got = attention.attend(q, view, D**-0.5).astype(mx.float32)
        # The oracle: positions [offset - W, stored) from the full history, the rest exact.
        lo = max(0, offset - W)
        seen = [tuple(a[:, :, lo:stored] for a in t) for t in (full.k, full.v)]
        past = attention.Compressed(*seen, stored - lo, full.spec, v_mean=full.v_mean, tail=view.tail)
        want = _oracle(q, past).astype(mx.float32)
        assert mx.abs(got - want).max().item() < 2e-3 * max(1.0, mx.abs(want).max().item()), i


def test_a_tail_as_long_as_the_window_is_not_kept(monkeypatch):
    monkeypatch.setattr(kvcache, "TAIL", 32)
    c = QuantizedCache(SPECS["int4"], window=32)
    c.update_and_fetch(*_tokens(40, 10))
    view, _ = c.update_and_fetch(*_tokens(1, 11))
    assert view.tail is None and c.tail_k is None
