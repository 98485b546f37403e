"""attend() hands a decode step to the fused kernels with the cache's transforms as flags.

The kernels undo inside themselves what the cache did before quantizing (q rotated like the
keys, the output un-centered and rotated back), so attend() must pass exactly the layer's
rotation and centering. Here a stand-in for app.engine.kernels implements that contract with the
reference (no GPU on CI; the self-test's `undo_transforms`); the real kernels are held to the same contract in test_kernels_device.py.
"""

import sys
import types

import mlx.core as mx
import pytest

import app.engine
from app import selftest
from app.engine import attention, layout, rotation
from app.engine.layout import LayerSpec, Quant
from app.engine.policy import INT4


@pytest.fixture
def fused(monkeypatch):
    fake = types.ModuleType("app.engine.kernels")
    fake.available = lambda: "cuda"
    fake.calls = []

    def decode(*a, **kw):
        fake.calls.append({k: kw[k] for k in ("rotate_q", "rotate_out")} | {"centered": kw["v_mean"] is not None})
        kw.pop("poison", None)
        return selftest.undo_transforms(attention.reference_decode_attention)(*a, **kw)

    fake.decode_attention = decode
    # `from app.engine import kernels` reads the package attribute first, sys.modules second.
    monkeypatch.setitem(sys.modules, "app.engine.kernels", fake)
    monkeypatch.setattr(app.engine, "kernels", fake, raising=False)
    attention.force_reference(False)
    yield fake
    attention.force_reference(None)


@pytest.mark.parametrize("spec", [LayerSpec(INT4, INT4), LayerSpec(Quant(8, 128, True, True), INT4),
                                  LayerSpec(Quant(4, 64), Quant(4, 64, rotate=True))],
                         ids=["int4", "auto", "v-rotated-only"])
def test_fused_decode_matches_the_reference_path(fused, spec):
    mx.random.seed(3)
    B, n_kv, G, D, T = 1, 2, 4, 128, 77
    k = mx.random.normal((B, n_kv, T, D))
    v = mx.random.normal((B, n_kv, T, D)) + 0.5
    # Stored as the cache stores them: rotated, then centered (the means in the rotated space).
    ks = rotation.rotate(k) if spec.k.rotate else k
    vs = rotation.rotate(v) if spec.v.rotate else v
    ks = ks - ks.mean(axis=2, keepdims=True) if spec.k.center else ks
    vm = vs.mean(axis=2, keepdims=True) if spec.v.center else None
    vs = vs - vm if vm is not None else vs
    kv = attention.Compressed(layout.quantize(ks.astype(mx.float16), spec.k), layout.quantize(vs.astype(mx.float16), spec.v),
                              T, spec, v_mean=vm)
    q = mx.random.normal((B, n_kv * G, 1, D)).astype(mx.float16)

    got = attention.attend(q, kv, D**-0.5)
    assert fused.calls == [{"rotate_q": spec.k.rotate, "rotate_out": spec.v.rotate, "centered": vm is not None}]
    attention.force_reference(True)
    want = attention.attend(q, kv, D**-0.5)
    err = mx.abs(got.astype(mx.float32) - want.astype(mx.float32)).max().item()
    assert err < 2e-2, err


def test_unsupported_shapes_take_the_reference_path(fused, monkeypatch):
    class Unsupported(Exception):
        pass

    def refuse(*a, **kw):
        raise Unsupported("GQA ratio 16 is not supported by the fused kernel (at most 8).")

    fused.KernelUnsupported = Unsupported
    fused.decode_attention = refuse
    spec = LayerSpec(INT4, INT4)
    x = mx.random.normal((1, 1, 40, 64)).astype(mx.float16)
    kv = attention.Compressed(layout.quantize(x, spec.k), layout.quantize(x, spec.v), 40, spec)
    out = attention.attend(mx.random.normal((1, 16, 1, 64)).astype(mx.float16), kv, 0.125)
    assert out.shape == (1, 16, 1, 64) and not mx.any(mx.isnan(out)).item()
