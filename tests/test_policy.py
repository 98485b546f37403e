"""The precision policy: what each mode stores, how auto decides, and clear errors."""

import pytest

from app.engine import policy
from app.engine.loader import ModelShape


def shape(head_dim=128, scale=None, windows=(None,) * 4, n_kv_heads=2):
    return ModelShape(n_layers=len(windows), n_kv_heads=n_kv_heads, head_dim=head_dim, windows=list(windows),
                      attention_scale=head_dim**-0.5 if scale is None else scale, max_context=8192)


def test_int4_is_4_5_bits_rotated_and_centered():
    p = policy.choose(shape(), "int4")
    assert all(s.k.bits == s.v.bits == 4 and s.k.group == 64 for s in p.layers)
    assert all(s.k.rotate and s.k.center and s.v.rotate and s.v.center for s in p.layers)
    assert p.bits_per_element(shape()) == pytest.approx(4.5)


def test_int8_is_8_5_bits():
    assert policy.choose(shape(), "int8").bits_per_element(shape()) == pytest.approx(8.5)


def test_fp16_keeps_mlx_lm_caches():
    p = policy.choose(shape(), "fp16")
    assert p.layers == (None,) * 4 and p.bits_per_element(shape()) == 16.0


def test_key_gain():
    assert policy.key_gain(shape(128)) == pytest.approx(1.0)
    assert policy.key_gain(shape(256, scale=1.0)) == pytest.approx(16.0)


def test_auto_is_8_bit_keys_4_bit_values_within_6_5_bits():
    for s in (shape(128), shape(256, scale=1.0, windows=(512,) * 5 + (None,)), shape(64)):
        p = policy.choose(s, "auto")
        k, v = p.layers[0].k, p.layers[0].v
        assert (k.bits, v.bits) == (8, 4) and k.rotate and k.center and v.rotate and v.center
        assert k.group == min(128, s.head_dim)
        assert p.bits_per_element(s) <= 6.5
    assert "key gain 16" in policy.choose(shape(256, scale=1.0), "auto").name


def test_sliding_windows_weigh_bits_by_what_each_layer_holds():
    s = shape(64, windows=(32, None))
    p = policy.Policy("x", (policy.parse_spec("k8g64v8g64", 64), policy.parse_spec("k4g64v4g64", 64)))
    assert p.bits_per_element(s, tokens=96) == pytest.approx((8.5 * 32 + 4.5 * 96) / 128)


def test_spec_strings():
    spec = policy.parse_spec("k8g128rcv4g32", 256)
    assert (spec.k.bits, spec.k.group, spec.k.rotate, spec.k.center) == (8, 128, True, True)
    assert (spec.v.bits, spec.v.group, spec.v.rotate, spec.v.center) == (4, 32, False, False)
    assert spec.bits_per_element == pytest.approx((8.25 + 5.0) / 2)


@pytest.mark.parametrize("text,match", [
    ("int3", "not one of"),
    ("k4g128v4g64", "does not divide"),
    ("k4g32rv4g32", "power-of-two"),
])
def test_bad_modes_say_why(text, match):
    with pytest.raises(policy.PolicyError, match=match):
        policy.choose(shape(96), text)


def test_head_dim_not_a_multiple_of_32_is_refused():
    with pytest.raises(policy.PolicyError, match="divisible by 32"):
        policy.choose(shape(80), "int4")


def test_groups_and_rotation_adapt_to_the_head_dim():
    p = policy.choose(shape(96), "int4")  # 96 is not a power of two: no rotation, groups of 32
    assert p.layers[0].k.group == 32 and not p.layers[0].k.rotate
