"""The reference attention on the compressed cache against fp32 SDPA over the dequantized cache,
and the one seam into mlx-lm (this file fails loudly if a future mlx-lm moves it)."""

import os

import mlx.core as mx
import pytest

from app.engine import attention, kernels, layout, prefill_span
from app.engine.layout import Quant


@pytest.fixture(autouse=True)
def fresh_seed():
    # Fresh random inputs each run; the seed is in the failure report.
    seed = int.from_bytes(os.urandom(4), "little")
    mx.random.seed(seed)
    return seed


def _cache(B, Hkv, T, D, q: Quant, slack=0):
    x = mx.random.normal((B, Hkv, T + slack, D)) * mx.random.uniform(0.2, 3.0, (1, 1, 1, D))
    return layout.quantize(x, q)


def _oracle(q, k, v, qk: Quant, qv: Quant, scale, length, window=None, fresh=None):
    """fp32 SDPA over mx.dequantize'd K/V with an explicit causal/window mask."""
    B, Hq, L, D = q.shape
    kd = layout.dequantize(tuple(a[:, :, :length] for a in k), qk)
    vd = layout.dequantize(tuple(a[:, :, :length] for a in v), qv)
    if fresh is not None:
        kd = mx.concatenate([kd[:, :, : length - L], fresh[0]], axis=2)
        vd = mx.concatenate([vd[:, :, : length - L], fresh[1]], axis=2)
    qpos = mx.arange(length - L, length)[:, None]
    kpos = mx.arange(length)[None]
    mask = kpos <= qpos
    if window is not None:
        mask = mask & (kpos > qpos - window)
    return mx.fast.scaled_dot_product_attention(q.astype(mx.float32), kd, vd, scale=scale, mask=mask)


def _check(out, ref, seed):
    assert out.shape == ref.shape
    err = mx.abs(out.astype(mx.float32) - ref).max().item()
    tol = 2e-4 * max(1.0, mx.abs(ref).max().item())
    assert err <= tol, f"max error {err} > {tol} (seed {seed})"


@pytest.mark.parametrize("ratio", [1, 4, 8])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("length", [1, 63, 1001])
def test_decode_matches_dequantized_sdpa(ratio, head_dim, length, fresh_seed):
    Hkv = 2
    qk, qv = Quant(8, 128 if head_dim >= 128 else 64), Quant(4, 64)
    k, v = _cache(1, Hkv, length, head_dim, qk, slack=37), _cache(1, Hkv, length, head_dim, qv, slack=37)
    q = mx.random.normal((1, Hkv * ratio, 1, head_dim))
    scale = head_dim**-0.5
    kw = dict(scale=scale, length=length, k_bits=qk.bits, v_bits=qv.bits, k_group=qk.group, v_group=qv.group)
    out = attention.reference_decode_attention(q, k, v, **kw)
    _check(out, _oracle(q, k, v, qk, qv, scale, length), fresh_seed)


@pytest.mark.parametrize("ratio", [1, 4, 8])
@pytest.mark.parametrize("head_dim", [64, 256])
def test_decode_window_and_small_block(ratio, head_dim, fresh_seed, monkeypatch):
    monkeypatch.setattr(attention, "DECODE_BLOCK", 128)  # many blocks: the online softmax is exercised
    q4 = Quant(4, 64)
    length, window = 999, 300
    k, v = _cache(2, 1, length, head_dim, q4), _cache(2, 1, length, head_dim, q4)
    q = mx.random.normal((2, ratio, 1, head_dim))
    kw = dict(scale=1.0, length=length, k_bits=4, v_bits=4, k_group=64, v_group=64, window=window)
    out = attention.reference_decode_attention(q, k, v, **kw)
    _check(out, _oracle(q, k, v, q4, q4, 1.0, length, window), fresh_seed)


@pytest.mark.parametrize("ratio", [1, 4, 8])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("L,length,window", [(5, 5, None), (33, 517, None), (130, 401, 64), (77, 77, 16)])
def test_prefill_causal_and_window(ratio, head_dim, L, length, window, fresh_seed, monkeypatch):
    monkeypatch.setattr(attention, "PREFILL_SCORE_BYTES", 4096)  # smallest blocks: masks cross block edges
    Hkv = 2
    qk, qv = Quant(4, 32), Quant(8, 64)
    k, v = _cache(1, Hkv, length, head_dim, qk), _cache(1, Hkv, length, head_dim, qv)
    q = mx.random.normal((1, Hkv * ratio, L, head_dim))
    kw = dict(scale=head_dim**-0.5, length=length, k_bits=4, v_bits=8, k_group=32, v_group=64, window=window)
    out = attention.reference_prefill_attention(q, k, v, **kw)
    _check(out, _oracle(q, k, v, qk, qv, head_dim**-0.5, length, window), fresh_seed)


@pytest.mark.parametrize("window", [None, 40])
def test_prefill_reads_the_chunk_exactly(window, fresh_seed):
    """With `fresh`, the chunk's own positions come from exact K/V, the past from the cache."""
    Hkv, D, L, length = 2, 128, 50, 300
    q4 = Quant(4, 64)
    k, v = _cache(1, Hkv, length, D, q4), _cache(1, Hkv, length, D, q4)
    fresh = (mx.random.normal((1, Hkv, L, D)), mx.random.normal((1, Hkv, L, D)))
    q = mx.random.normal((1, Hkv * 4, L, D))
    kw = dict(scale=D**-0.5, length=length, k_bits=4, v_bits=4, k_group=64, v_group=64, window=window)
    out = attention.reference_prefill_attention(q, k, v, fresh=fresh, **kw)
    _check(out, _oracle(q, k, v, q4, q4, D**-0.5, length, window, fresh), fresh_seed)


def test_output_dtype_follows_queries():
    q4 = Quant(4, 64)
    k, v = _cache(1, 1, 10, 64, q4), _cache(1, 1, 10, 64, q4)
    for dtype in (mx.float16, mx.bfloat16, mx.float32):
        q = mx.random.normal((1, 2, 1, 64)).astype(dtype)
        out = attention.reference_decode_attention(q, k, v, scale=0.125, length=10, k_bits=4, v_bits=4,
                                                   k_group=64, v_group=64)
        assert out.dtype == dtype


# -- the seam ------------------------------------------------------------------------------------
def test_mlx_lm_still_routes_caches_with_bits_through_base():
    """If this fails, mlx-lm moved the seam: Folio's int4 cache would silently get mlx-lm's attention."""
    import inspect

    from mlx_lm.models import base, gemma3_text, llama, qwen3

    attention.check_seam()
    src = inspect.getsource(base.scaled_dot_product_attention)
    assert 'hasattr(cache, "bits")' in src and "quantized_scaled_dot_product_attention(" in src
    for module in (llama, qwen3, gemma3_text):
        assert module.scaled_dot_product_attention is base.scaled_dot_product_attention, module.__name__


@pytest.fixture
def on_cpu():
    """mlx-lm's quantized path has no CUDA implementation for these small shapes (MLX 0.32's
    quantized_matmul); the wiring these tests check is the same on every device."""
    prev = mx.default_device()
    mx.set_default_device(mx.cpu)
    yield
    mx.set_default_device(prev)


def test_install_is_idempotent_and_leaves_other_caches_alone(on_cpu):
    from mlx_lm.models import base
    from mlx_lm.models.cache import QuantizedKVCache

    attention.install()
    first = base.quantized_scaled_dot_product_attention
    attention.install()
    assert base.quantized_scaled_dot_product_attention is first and first._folio
    # mlx-lm's own quantized cache still takes mlx-lm's path through the wrapper.
    c = QuantizedKVCache(group_size=64, bits=4)
    k = mx.random.normal((1, 1, 8, 64))
    keys, values = c.update_and_fetch(k, k)
    q = mx.random.normal((1, 2, 1, 64))
    before = attention.calls
    # mlx-lm scales the queries in place (`queries *= scale`): each call gets its own copy.
    out = base.scaled_dot_product_attention(q * 1, keys, values, cache=c, scale=0.125, mask=None)
    ref = first._original(q * 1, keys, values, scale=0.125, mask=None, group_size=64, bits=4)
    assert attention.calls == before
    assert mx.allclose(out, ref).item()


def test_check_seam_fails_loudly_when_moved(monkeypatch):
    from mlx_lm.models import base

    monkeypatch.delattr(base, "quantized_scaled_dot_product_attention")
    with pytest.raises(attention.SeamMoved, match="mlx-lm moved"):
        attention.check_seam()


def test_forced_reference_path(monkeypatch):
    monkeypatch.setenv("FOLIO_REFERENCE_ATTENTION", "1")
    attention.force_reference(None)
    try:
        assert attention.path() == "reference"
    finally:
        attention.force_reference(None)


# -- folio bench attention -----------------------------------------------------------------------
def test_attention_bench_json(capsys, on_cpu):
    import json

    from app.bench import attention as bench
    from app.cli import build_parser

    args = build_parser().parse_args(["bench", "attention", "--backend", "reference", "--contexts", "300,1000",
                                      "--heads", "8", "--kv-heads", "2", "--head-dim", "64", "--repeats", "1",
                                      "--calls", "1", "--json"])
    assert bench.run(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == "reference" and [r["context"] for r in result["rows"]] == [300, 1000]
    for r in result["rows"]:
        assert {"context", "fp16_sdpa_ms", "dequant_sdpa_ms", "mlx_lm_quantized_ms", "folio_ms", "floor_ms"} <= set(r)
        assert r["folio_ms"] > 0


def test_attention_bench_refuses_a_missing_backend(capsys):
    from app.bench import attention as bench
    from app.cli import build_parser

    wanted = "metal" if attention.kernel_backend() != "metal" else "cuda"
    args = build_parser().parse_args(["bench", "attention", "--backend", wanted])
    assert bench.run(args) == 2 and f"No {wanted} kernel" in capsys.readouterr().out


@pytest.mark.parametrize("ratio", [1, 4, 8])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("L,length,window,with_fresh", [(5, 5, None, False), (33, 517, None, False),
                                                        (50, 300, None, True), (130, 401, 64, False),
                                                        (77, 77, 16, True), (40, 300, 40, True)])
def test_gpu_prefill_path_matches_the_oracle(ratio, head_dim, L, length, window, with_fresh, fresh_seed):
    """The GPU prefill (past dequantized once, fused SDPA) keeps the reference's contract: causal
    and window masks across the compressed past and the exact chunk."""
    Hkv = 2
    qk, qv = Quant(4, 32), Quant(8, 64)
    k, v = _cache(1, Hkv, length, head_dim, qk, slack=9), _cache(1, Hkv, length, head_dim, qv, slack=9)
    fresh = (mx.random.normal((1, Hkv, L, head_dim)), mx.random.normal((1, Hkv, L, head_dim))) if with_fresh else None
    q = mx.random.normal((1, Hkv * ratio, L, head_dim))
    kw = dict(scale=head_dim**-0.5, length=length, k_bits=4, v_bits=8, k_group=32, v_group=64, window=window)
    out = attention.sdpa_prefill_attention(q, k, v, fresh=fresh, **kw)
    _check(out, _oracle(q, k, v, qk, qv, head_dim**-0.5, length, window, fresh), fresh_seed)


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_gpu_prefill_path_in_half_precision_models(dtype, fresh_seed):
    """fp16 models attend in fp16 over the dequantized past, bf16 models in fp32; either way the
    output stays within the model dtype's rounding of fp32 attention."""
    Hkv, D, L, length = 2, 128, 50, 300
    q8 = Quant(8, 128)
    k, v = _cache(1, Hkv, length, D, q8), _cache(1, Hkv, length, D, Quant(4, 64))
    fresh = tuple(mx.random.normal((1, Hkv, L, D)).astype(dtype) for _ in range(2))
    q = (mx.random.normal((1, Hkv * 4, L, D)) * 2).astype(dtype)
    kw = dict(scale=D**-0.5, length=length, k_bits=8, v_bits=4, k_group=128, v_group=64)
    out = attention.sdpa_prefill_attention(q, k, v, fresh=fresh, **kw)
    assert out.dtype == dtype
    ref = _oracle(q, k, v, q8, Quant(4, 64), D**-0.5, length, None, tuple(a.astype(mx.float32) for a in fresh))
    err = mx.abs(out.astype(mx.float32) - ref).max().item()
    tol = 1e-2 * max(1.0, mx.abs(ref).max().item())
    assert err <= tol, f"max error {err} > {tol} (seed {fresh_seed})"


def test_prefill_takes_the_gpu_path_only_where_it_fits(monkeypatch):
    taken = []
    monkeypatch.setattr(attention, "path", lambda: "metal")
    monkeypatch.setattr(attention, "sdpa_prefill_attention", lambda *a, **kw: taken.append("sdpa") or "sdpa")
    monkeypatch.setattr(attention, "reference_prefill_attention", lambda *a, **kw: taken.append("ref") or "ref")
    q4 = Quant(4, 64)
    k = _cache(1, 2, 1000, 128, q4)
    q = mx.zeros((1, 8, 100, 128), dtype=mx.float16)
    kw = dict(scale=0.1, length=1000, k_bits=4, v_bits=4, k_group=64, v_group=64)
    assert 0 < attention.sdpa_prefill_budget() <= 1 << 30  # a share of this machine's memory
    monkeypatch.setattr(attention, "PREFILL_SDPA_BYTES", 1 << 30)
    assert attention.prefill_attention(q, k, k, **kw) == "sdpa"
    # 2 (K and V) x 2 KV heads x 1000 visible slots x 128 x 2 bytes (fp16)
    assert attention.sdpa_prefill_bytes(q, k, k, **kw) == 2 * 2 * 1000 * 128 * 2
    monkeypatch.setattr(attention, "PREFILL_SDPA_BYTES", 2 * 2 * 1000 * 128 * 2 - 1)
    assert attention.prefill_attention(q, k, k, **kw) == "ref"
    monkeypatch.setattr(attention, "path", lambda: "reference")  # forced reference or no GPU
    monkeypatch.setattr(attention, "PREFILL_SDPA_BYTES", 1 << 30)
    assert attention.prefill_attention(q, k, k, **kw) == "ref"
    assert taken == ["sdpa", "ref", "ref"]


def test_prefill_budget_counts_the_copies_of_the_path_taken(monkeypatch):
    # A chunk with a past: MLX ops write the dequantized past, then past + chunk (two copies);
    # the span kernel writes past + chunk once.
    q4 = Quant(4, 64)
    k = _cache(1, 2, 1000, 128, q4)
    q = mx.zeros((1, 8, 100, 128), dtype=mx.float16)
    fresh = (mx.zeros((1, 2, 100, 128), dtype=mx.float32),) * 2
    kw = dict(scale=0.1, length=1000, k_bits=4, v_bits=4, k_group=64, v_group=64, fresh=fresh)
    one = 2 * 2 * 1000 * 128 * 2
    monkeypatch.setattr(kernels, "available", lambda: None)
    assert attention.sdpa_prefill_bytes(q, k, k, **kw) == 2 * one
    monkeypatch.setattr(kernels, "available", lambda: "cuda")
    assert attention.sdpa_prefill_bytes(q, k, k, **kw) == one
    monkeypatch.setattr(prefill_span, "ENABLED", False)
    assert attention.sdpa_prefill_bytes(q, k, k, **kw) == 2 * one


def test_prefill_takes_the_model_space_path_only_when_switched_on(monkeypatch):
    from app.engine.kvcache import QuantizedCache
    from app.engine.layout import LayerSpec

    cache = QuantizedCache(LayerSpec(Quant(4, 64, True, True), Quant(4, 64, True, True)))
    view, _ = cache.update_and_fetch(mx.random.normal((1, 2, 40, 64)), mx.random.normal((1, 2, 40, 64)))
    q = mx.random.normal((1, 4, 40, 64))
    taken = []
    monkeypatch.setattr(attention, "path", lambda: "cuda")
    monkeypatch.setattr(attention, "_prefill_model_space", lambda *a, **kw: taken.append("model space") or q)
    monkeypatch.setattr(attention, "PREFILL_MODEL_SPACE", True)
    assert attention.attend(q, view, 0.125) is q and taken == ["model space"]
    monkeypatch.setattr(attention, "PREFILL_MODEL_SPACE", False)
    out = attention.attend(q, view, 0.125)  # the rotated-queries path (here on MLX ops)
    assert out.shape == q.shape and taken == ["model space"]
    assert view.fresh_raw is not None and view.k_mean is not None  # what the model-space path needs
