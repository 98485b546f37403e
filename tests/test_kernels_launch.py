"""What `kernels.decode_attention` hands MLX, checked on the CPU: the two launches' grids, params,
template flags, inputs and output shapes (the kernels themselves run in test_kernels_device.py).
MLX's kernel builders are replaced by recorders that return arrays of the requested shapes."""

import math

import mlx.core as mx
import pytest

from app.engine import kernels


@pytest.fixture(params=["cuda", "metal"])
def backend(request):
    return request.param


@pytest.fixture
def launches(monkeypatch, backend):
    calls = []

    def builder(kernel, backend, input_names, output_names, template):
        def launch(**kw):
            assert "template" not in kw  # the variant's constants are in its source
            calls.append((kernel, input_names, dict(kw, template=template)))
            return [mx.zeros(s, dtype=d) for s, d in zip(kw["output_shapes"], kw["output_dtypes"])]

        return launch

    monkeypatch.setattr(kernels, "available", lambda: backend)
    monkeypatch.setattr(kernels, "_build", builder)
    # The recorders read the calls' arguments, so the calls are made, not traced (the compiled
    # path is checked below); the launchers cached by other tests hold other builders.
    monkeypatch.setattr(kernels, "COMPILED", False)
    kernels.forget()
    yield calls
    kernels.forget()


def _cache(B, n_kv, t_alloc, D, bits=4, group=64):
    return mx.quantize(mx.zeros((B, n_kv, t_alloc, D), dtype=mx.float16), group, bits)


CASES = {
    "plain": dict(B=1, H=32, n_kv=8, D=128, length=32768, window=None, tail=0, transforms=False),
    "window": dict(B=2, H=8, n_kv=2, D=64, length=5000, window=4096, tail=0, transforms=False),
    "tail and transforms": dict(B=1, H=16, n_kv=2, D=256, length=4097, window=None, tail=37, transforms=True),
    "ring with a tail": dict(B=1, H=8, n_kv=1, D=128, length=512, window=None, tail=5, transforms=True,
                             skip=(509, 5)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_launches(launches, backend, case):
    c = CASES[case]
    B, H, n_kv, D, length, window, n_tail = (c[k] for k in ("B", "H", "n_kv", "D", "length", "window", "tail"))
    t_alloc = length + 300
    q = mx.zeros((B, H, 1, D), dtype=mx.float16)
    k, v = _cache(B, n_kv, t_alloc, D, 8, 64), _cache(B, n_kv, t_alloc, D)
    extra = {}
    if c["transforms"]:
        extra = dict(rotate_q=True, rotate_out=True, v_mean=mx.ones((B, n_kv, 1, D)), k_mean=mx.ones((B, n_kv, 1, D)))
    if n_tail:
        extra["tail"] = (mx.zeros((B, n_kv, 64, D), dtype=mx.bfloat16),) * 2 + (n_tail,)
    if "skip" in c:
        extra["skip"] = c["skip"]
    out = kernels.decode_attention(q, k, v, scale=0.1, length=length, k_bits=8, v_bits=4, k_group=64, v_group=64,
                                   window=window, **extra)
    assert out.shape == q.shape and out.dtype == q.dtype
    one_pass = kernels.ONE_PASS[backend]
    assert [name for name, _, _ in launches] == ["decode_partial"] if one_pass else ["decode_partial", "decode_combine"]
    p_name, p_inputs, p = launches[0]
    flags = c["transforms"]
    # Only what the variant reads: the tail with a tail, the means with the transforms.
    names = kernels.INPUTS + (("tk", "tv") if n_tail else ()) + (("kmean",) if n_tail and flags else ()) \
        + (("vmean",) if flags else ()) + (("work",) if one_pass else ())
    assert p_inputs == names and len(p["inputs"]) == len(names)
    given = dict(zip(names, p["inputs"]))
    assert given["q"] is q and all(given[n] is a for n, a in zip(("kp", "ks", "kb", "vp", "vs", "vb"), (*k, *v)))
    if n_tail:
        assert given["tk"] is extra["tail"][0] and given["tv"] is extra["tail"][1]
    if flags:
        assert given["vmean"].shape == (B, n_kv, 1, D) and given["vmean"].dtype == mx.float32

    nw, nt = kernels.warps_per_block(D, backend), kernels.step_tokens(D)
    start = length - window if window else 0
    q_splits, chunk = kernels.split_plan(length - start, B * n_kv, nw, nt, extra=bool(n_tail))
    splits = q_splits + bool(n_tail)
    assert math.ceil((length - start) / chunk) == q_splits
    assert p["grid"] == (splits * nw * 32, B * n_kv, 1) and p["threadgroup"] == (nw * 32, 1, 1)
    skip = c.get("skip", (0, 0))
    cap = kernels.max_splits(B * n_kv)
    assert splits <= cap
    assert kernels.param_values(given["params"]) == [start, length, chunk, n_kv, t_alloc, H, splits, n_tail,
                                                     64 if n_tail else 0, *skip, B * H * cap * D if one_pass else 0,
                                                     kernels.f32_bits(0.1), B * H * cap * (D + 2) if one_pass else 0]
    partials = [(B * H, splits, D), (B * H, splits, 2)]
    assert p["output_shapes"] == ([(B, H, 1, D)] if one_pass else partials)
    t = dict(p["template"])
    assert (t["T"], t["D"], t["G"], t["KBITS"], t["VBITS"], t["KGROUP"], t["VGROUP"]) == (
        mx.float16, D, H // n_kv, 8, 4, 64, 64)
    assert (t["ROTQ"], t["TAILK"]) == (flags, bool(n_tail))
    assert (t["KCTR"], t["VCTR"], t["ROTV"]) == ((flags and bool(n_tail)),) * 3
    assert t["TT"] == (mx.bfloat16 if n_tail else mx.float32)
    assert (t["CENTER"], t["ROTO"]) == (flags, flags)
    if one_pass:
        # The partials' room for the longest split plan, o_part then ml_part (from params' 12th),
        # then the counters, zero (from params' 14th).
        work = given["work"]
        assert work.shape == (B * H * cap * (D + 2) + B * n_kv,) and work.dtype == mx.float32
        assert work[B * H * cap * (D + 2):].tolist() == [0] * (B * n_kv)
        return
    c_name, c_inputs, cb = launches[1]
    assert c_inputs == ("o_part", "ml_part", "params") + (("vmean",) if flags else ())
    if flags:
        assert cb["inputs"][3] is given["vmean"]
    assert kernels.param_values(cb["inputs"][2]) == [splits, H // n_kv, H, 0]
    assert cb["grid"] == (D * kernels.COMBINE_PARTS, B * H, 1)
    assert dict(cb["template"])["CENTER"] == flags and dict(cb["template"])["ROTO"] == flags
    assert cb["output_shapes"] == [(B, H, 1, D)]


def test_one_pass_calls_take_buffers_in_turn(monkeypatch):
    # Independent calls in one MLX command buffer may run at once: each needs counters and partials
    # of its own.
    monkeypatch.setattr(kernels, "available", lambda: "cuda")
    seen = []

    def builder(kernel, backend, input_names, output_names, template):
        def launch(**kw):
            assert input_names[-1] == "work"
            seen.append(id(kw["inputs"][-1]))
            return [mx.zeros(s, dtype=d) for s, d in zip(kw["output_shapes"], kw["output_dtypes"])]
        return launch

    monkeypatch.setattr(kernels, "_build", builder)
    monkeypatch.setattr(kernels, "COMPILED", False)  # the recorder reads each call's arguments
    kernels.forget()
    q = mx.zeros((1, 8, 1, 64), dtype=mx.float16)
    k = _cache(1, 2, 100, 64)
    for _ in range(2 * kernels.BUFFER_POOL):
        kernels.decode_attention(q, k, k, scale=0.1, length=99, k_bits=4, v_bits=4, k_group=64, v_group=64)
    assert kernels.BUFFER_POOL >= 21  # MLX runs up to 20 nodes per command buffer
    assert len(set(seen)) == kernels.BUFFER_POOL   # every call of a round its own counters and partials
    assert seen[: kernels.BUFFER_POOL] == seen[kernels.BUFFER_POOL:]   # the pool's, reused in turn
    kernels.forget()


def test_compiled_calls_take_each_calls_inputs(monkeypatch, backend):
    # Under mx.compile a launch shape is traced once and replayed: what changes from call to call
    # (on CUDA the counter taken in turn; params, below) must reach every replay as an input,
    # never be baked into the trace. Stand-in kernels write 1000 * counter + 7 (Metal: the partial
    # writes it, the combine passes it on).
    monkeypatch.setattr(kernels, "available", lambda: backend)

    def builder(kernel, backend, input_names, output_names, template):
        def launch(inputs, output_shapes, output_dtypes, **kw):
            if kernel == "decode_combine":
                return [mx.zeros(output_shapes[0], output_dtypes[0]) + inputs[0][0, 0, 0]]
            tag = 7 + (1000 * inputs[input_names.index("work")][-1] if "work" in input_names else mx.array(0))
            return [mx.zeros(sh, d) + tag.astype(d) for sh, d in zip(output_shapes, output_dtypes)]
        return launch

    monkeypatch.setattr(kernels, "_build", builder)
    q = mx.zeros((1, 8, 1, 64), dtype=mx.float32)
    k = _cache(1, 2, 4096, 64)
    lengths = (3000, 3001, 3002)   # one launch shape (the same splits): one trace
    got = {}
    for compiled in (False, True):
        monkeypatch.setattr(kernels, "COMPILED", compiled)
        kernels.forget()
        turn = iter(range(1, 10))
        monkeypatch.setattr(kernels, "_work_buffer", lambda n, f: mx.array([0.0] * f + [float(next(turn))] * n))
        got[compiled] = [kernels.decode_attention(q, k, k, scale=0.1, length=n, k_bits=4, v_bits=4, k_group=64,
                                                  v_group=64)[0, 0, 0, 0].item() for n in lengths]
    assert kernels._launcher.cache_info().currsize == 1
    kernels.forget()
    counters = (1000, 2000, 3000) if kernels.ONE_PASS[backend] else (0, 0, 0)
    assert got[True] == got[False] == [7 + c for c in counters]


def test_params_reach_each_compiled_replay():
    # A call's values ride in the strides of its params view, which no MLX op reads on the CPU. What
    # the kernels rely on is that a compiled function's replay hands its primitives the call's own
    # input, strides and all, not the traced one's: shown here through a view op.
    f = mx.compile(lambda p, x: (p[:1], x + 1))
    for values in ((3000, 1, -5, 1 << 30, kernels.f32_bits(0.125)), (3001, 2, 0, 7, kernels.f32_bits(-2.5))):
        out, _ = f(kernels._params(*values), mx.zeros((2,)))
        mx.eval(out)
        assert kernels.param_values(out) == [*values, 0]


def test_params_refuse_values_past_32_bits():
    with pytest.raises(kernels.KernelUnsupported, match="32 bits"):
        kernels._params(1, 1 << 31)


def test_one_pass_backends_match_their_preludes():
    for backend, one_pass in kernels.ONE_PASS.items():
        assert ("#define FOLIO_ONE_PASS 1" in kernels.header(backend)) == one_pass


def test_poison_fills_every_output(launches):
    q = mx.zeros((1, 8, 1, 64), dtype=mx.float16)
    k = _cache(1, 2, 100, 64)
    kernels.decode_attention(q, k, k, scale=0.1, length=99, k_bits=4, v_bits=4, k_group=64, v_group=64, poison=True)
    assert all(math.isnan(kw["init_value"]) for _, _, kw in launches)


def test_a_tail_longer_than_the_buffer_is_refused(launches):
    q = mx.zeros((1, 16, 1, 64), dtype=mx.float16)
    k = _cache(1, 2, 100, 64)
    tail = (mx.zeros((1, 2, 128, 64), dtype=mx.float16),) * 2 + (65,)
    with pytest.raises(kernels.KernelUnsupported, match="tail of 65 tokens"):
        kernels.decode_attention(q, k, k, scale=0.1, length=99, k_bits=4, v_bits=4, k_group=64, v_group=64, tail=tail)


@pytest.mark.parametrize("lo,stop,L", [(0, 4096, 512), (900, 4096, 0), (0, 0, 7)])
def test_prefill_span_launch(launches, backend, monkeypatch, lo, stop, L):
    from app.engine import prefill_span

    B, n_kv, D, t_alloc = 2, 4, 128, 5000
    k, v = _cache(B, n_kv, t_alloc, D, 8, 128), _cache(B, n_kv, t_alloc, D, 4, 64)
    fresh = tuple(mx.zeros((B, n_kv, L, D), dtype=mx.bfloat16) for _ in range(2)) if L else None
    keys, values = prefill_span.gather(k, v, lo=lo, stop=stop, fresh=fresh, dtype=mx.float32, k_bits=8, v_bits=4,
                                       k_group=128, v_group=64)
    rows = stop - lo + L
    assert keys.shape == values.shape == (B, n_kv, rows, D) and keys.dtype == mx.float32
    (kernel, names, kw), = launches  # one launch for K and V
    assert kernel == "prefill_span" and names == prefill_span.INPUTS
    assert kw["grid"] == (math.ceil(rows * D / 8 / prefill_span.TPB) * prefill_span.TPB, B * n_kv * 2, 1)
    assert kw["threadgroup"] == (prefill_span.TPB, 1, 1)
    assert kw["output_shapes"] == [(B, n_kv, rows, D)] * 2 and kw["output_dtypes"] == [mx.float32] * 2
    consts = dict(kw["template"])
    assert (consts["TO"], consts["D"], consts["KBITS"], consts["VBITS"], consts["KGROUP"], consts["VGROUP"]) == \
        (mx.float32, D, 8, 4, 128, 64)
    assert consts["TF"] == (mx.bfloat16 if L else mx.float32)
    inputs = kw["inputs"]
    assert all(a is b for a, b in zip(inputs[:6], (*k, *v)))  # the whole cache: no slice, no copy
    assert kernels.param_values(inputs[prefill_span.INPUTS.index("params")])[:4] == [lo, stop - lo, L, t_alloc]
    # Switched off, the same call takes MLX ops (no launch) and gives the same shapes.
    launches.clear()
    monkeypatch.setattr(prefill_span, "ENABLED", False)
    ref = prefill_span.gather(k, v, lo=lo, stop=stop, fresh=fresh, dtype=mx.float32, k_bits=8, v_bits=4,
                              k_group=128, v_group=64)
    assert not launches and ref[0].shape == keys.shape


def test_a_repeated_call_reuses_its_plan_and_a_new_length_gets_its_own(launches):
    # Every layer of a decode step makes the same call: its plan (checks, splits, params) is worked
    # out once. A call with another length must not get the cached plan of the one before.
    q = mx.zeros((1, 8, 1, 64), dtype=mx.float16)
    k = _cache(1, 2, 5000, 64)
    kernels._call_plan.cache_clear()
    for length in (4000, 4000, 4001, 4000):
        kernels.decode_attention(q, k, k, scale=0.1, length=length, k_bits=4, v_bits=4, k_group=64, v_group=64)
    info = kernels._call_plan.cache_info()
    assert (info.hits, info.misses) == (2, 2)
    seen = [kernels.param_values(kw["inputs"][kernels.INPUTS.index("params")])[1] for name, _, kw in launches
            if name == "decode_partial"]
    assert seen == [4000, 4000, 4001, 4000]   # each call's own length reached its launch
