"""The compiled decode path (attention.COMPILE) gives what the plain-ops path gives, on fresh random
inputs; the CUDA-safe unpack path for decode agrees too; and the decode-overhead bench runs."""

import os
from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest

from app.engine import attention, kvcache, layout
from app.engine.layout import LayerSpec, Quant


@pytest.fixture(autouse=True)
def fresh_seed():
    seed = int.from_bytes(os.urandom(4), "little")
    mx.random.seed(seed)
    return seed


def _inputs(B, Hq, Hkv, T, D, qk: Quant, qv: Quant, dtype):
    q = mx.random.normal((B, Hq, 1, D)).astype(dtype)
    k = layout.quantize(mx.random.normal((B, Hkv, T, D)) * 2, qk)
    v = layout.quantize(mx.random.normal((B, Hkv, T, D)), qv)
    return q, k, v


def _decode(q, k, v, qk, qv, length, window, compiled: bool, monkeypatch):
    monkeypatch.setattr(attention, "COMPILE", compiled)
    out = attention.reference_decode_attention(q, k, v, scale=q.shape[-1] ** -0.5, length=length, k_bits=qk.bits,
                                               v_bits=qv.bits, k_group=qk.group, v_group=qv.group, window=window)
    mx.eval(out)
    return np.array(out.astype(mx.float32))


@pytest.mark.parametrize("Hq,Hkv,D,qk,qv,dtype", [
    (4, 4, 64, Quant(4, 64), Quant(4, 64), mx.float32),
    (8, 2, 128, Quant(8, 128), Quant(4, 64), mx.float16),
    (8, 1, 256, Quant(4, 32), Quant(8, 128), mx.float32),
])
@pytest.mark.parametrize("length,window", [(1, None), (2, None), (37, None), (129, None), (300, None), (300, 90)])
def test_compiled_decode_matches_plain_ops(Hq, Hkv, D, qk, qv, dtype, length, window, monkeypatch):
    monkeypatch.setattr(attention, "DECODE_BLOCK", 128)  # 300 tokens: three blocks, first/step/finish
    q, k, v = _inputs(1, Hq, Hkv, length + 20, D, qk, qv, dtype)
    plain = _decode(q, k, v, qk, qv, length, window, False, monkeypatch)
    compiled = _decode(q, k, v, qk, qv, length, window, True, monkeypatch)
    tol = 1e-5 if dtype == mx.float32 else 2e-3
    np.testing.assert_allclose(compiled, plain, rtol=tol, atol=tol)


def test_unpack_decode_for_cuda_matches(monkeypatch):
    # What the CUDA backend takes (quantized_matmul there fails on small float32 shapes).
    qk, qv = Quant(8, 128), Quant(4, 64)
    q, k, v = _inputs(1, 8, 2, 200, 128, qk, qv, mx.float32)
    qmm = _decode(q, k, v, qk, qv, 163, None, True, monkeypatch)
    monkeypatch.setattr(attention, "_qmm_fails_here", lambda: True)
    unpacked = _decode(q, k, v, qk, qv, 163, None, True, monkeypatch)
    np.testing.assert_allclose(unpacked, qmm, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec", [
    LayerSpec(Quant(8, 128, True, True), Quant(4, 64, True, True)),   # auto: K and V quantized apart
    LayerSpec(Quant(4, 64, True, True), Quant(4, 64, True, True)),    # int4: one stacked quantize
    LayerSpec(Quant(4, 32, True, False), Quant(4, 32, False, True)),  # rotation and centering differ
    LayerSpec(Quant(8, 64), Quant(4, 128)),                           # neither
])
@pytest.mark.parametrize("window", [None, 24])
def test_cache_decode_compiled_matches_plain(spec, window, monkeypatch):
    """Storage and attention output of decode tokens through QuantizedCache, both ways."""
    B, Hq, Hkv, D = 1, 4, 2, 128
    prompt = [mx.random.normal((B, Hkv, 40, D)).astype(mx.float16) for _ in range(2)]
    steps = [[mx.random.normal((B, Hkv, 1, D)).astype(mx.float16) for _ in range(2)] for _ in range(5)]
    queries = [mx.random.normal((B, Hq, 1, D)).astype(mx.float16) for _ in steps]

    def run(compiled: bool):
        monkeypatch.setattr(attention, "COMPILE", compiled)
        c = kvcache.QuantizedCache(spec, window)
        c.update_and_fetch(*prompt)
        outs = []
        for (k, v), q in zip(steps, queries):
            view, _ = c.update_and_fetch(k, v)
            outs.append(attention.attend(q, view, D**-0.5))
        mx.eval(outs, c.state)
        return [np.array(a) for a in c.state], [np.array(o.astype(mx.float32)) for o in outs]

    plain_state, plain_out = run(False)
    state, out = run(True)
    for a, b in zip(state, plain_state):
        np.testing.assert_array_equal(a, b)  # the stored cache is bit for bit the same
    for a, b in zip(out, plain_out):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3)


def test_decode_overhead_bench_runs(capsys):
    from app.bench import decode_overhead

    args = SimpleNamespace(layers=2, hidden=64, heads=4, kv_heads=2, head_dim=64, intermediate=64, vocab=32,
                           dtype="float32", contexts="40", tokens=2, repeats=1, layer_calls=1, json=True)
    assert decode_overhead.run(args) == 0
    import json

    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {r["mode"] for r in rows} == set(decode_overhead.MODES)
    by_mode = {r["mode"]: r for r in rows}
    # Folio's compressed layer keeps its newest tokens exact: a decode step writes two slices, as the
    # fp16 cache does, and quantizes nothing (TAIL tokens are quantized together); compiled decode
    # dispatches fewer ops.
    for mode in ("int4", "fp16"):
        assert "Quantize" not in by_mode[mode]["layer_op_names"]
        assert by_mode[mode]["layer_op_names"]["SliceUpdate"] == 2
    for mode in ("int4", "auto"):
        assert by_mode[mode]["layer_kernels"] < by_mode[f"{mode} plain"]["layer_kernels"]
    assert all(r["decode_ms_per_token"] > 0 and r["layer_ops"] > 0 for r in rows)
