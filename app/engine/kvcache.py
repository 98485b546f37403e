"""KV caches in mlx-lm's cache protocol, by mode; their byte cost; save and restore.

fp16 uses mlx-lm's own caches. The compressed modes (int8, int4, auto) use `QuantizedCache`,
which stores K and V in the layout of layout.py and hands attention a `Compressed` view, so
mlx-lm's models reach Folio's attention through the seam in attention.py.
"""

import functools
import json
from pathlib import Path

import mlx.core as mx
from mlx_lm.models.cache import KVCache, RotatingKVCache, make_prompt_cache

from app import log
from app.engine import attention, layout, policy, rotation
from app.engine.errors import FolioError

logger = log.get("kvcache")

FP16_BYTES = 2
FILE_FORMAT = "folio-kv-1"
# A prefill chunk attends to its own exact K/V (they are in memory anyway) and reads only the
# past compressed; decode reads everything compressed. False reads the chunk compressed too
# (what mlx-lm's quantized cache does): `folio bench quality --compressed-chunk` measures both.
EXACT_CHUNK = True
# How many tokens a wrapped sliding-window ring can rewind. A chat template re-rendering the
# last answer differs from the generated tokens only near its end (trimmed whitespace, a closing
# tag), so a few hundred tokens cover the rewinds seen in practice, while the undo log stays a
# small fixed cost per window layer (R tokens compressed, against a window of 512 to 4096).
REWIND = 512
# Decode tokens a layer keeps exact (in the model's dtype, as they came) before quantizing them
# together (a sliding-window layer only if its window is longer): a decode step then writes two slices, as an fp16 cache does, instead
# of rotating, centering and quantizing one token and writing six, and the newest tokens, which
# attention weighs most, are read exactly. 0 quantizes every token at once.
TAIL = 64


class CacheFileError(FolioError):
    """A saved cache that cannot be used with this model or policy."""


class QuantizedCache:
    """One layer's compressed K/V, grown in preallocated blocks; sliding-window layers keep a ring.

    Full-attention layers store position p in slot p. A window layer keeps `window` slots and
    position p in slot p % window, so a decode step sees exactly its window (RoPE is already
    applied, so slot order does not matter); a prefill chunk is handed the previous window-1
    tokens in temporal order plus the chunk, then the ring keeps the chunk's last window tokens.

    Writing position p >= window into the ring logically evicts position p - window. An undo log,
    itself a ring of REWIND slots indexed p % REWIND, keeps that evicted entry (compressed, as
    stored) for the last REWIND positions, so `trim` can put them back and a wrapped ring can
    still rewind: positions [_undo_floor, offset) are undoable.
    """

    step = 256

    def __init__(self, spec: layout.LayerSpec, window: int | None = None):
        self.spec = spec
        self.window = window
        self.k = self.v = None
        self.offset = 0
        self.k_mean = self.v_mean = None  # (B, n_kv_heads, 1, head_dim) float32, when centering
        self._mean_pair = None  # both means stacked for decode (zeros for one not centered)
        self.undo_k = self.undo_v = None  # the undo log's triples, allocated when the ring wraps
        self._undo_floor = 0  # lowest position whose eviction the log can still undo
        # The exact tail: the last tail_n decode tokens (B, n_kv_heads, TAIL, head_dim), not yet
        # quantized; positions [offset - tail_n, offset). Window layers keep one if TAIL < window.
        self.tail_k = self.tail_v = None
        self.tail_n = 0

    # mlx-lm's base.scaled_dot_product_attention routes caches with `bits` to the seam.
    @property
    def bits(self) -> int:
        return self.spec.k.bits

    @property
    def group_size(self) -> int:
        return self.spec.k.group

    @property
    def length(self) -> int:
        return min(self.offset, self.window) if self.window else self.offset

    @property
    def stored(self) -> int:
        """Tokens quantized so far: all but the exact tail's."""
        return self.offset - self.tail_n

    @property
    def slots(self) -> int:
        return 0 if self.k is None else self.k[0].shape[2]

    def _reserve(self, needed: int, B: int, H: int, D: int):
        if self.k is not None and needed <= self.slots:
            return
        have = self.slots
        # Grow by at least an eighth, so a 128K-token cache is copied a bounded number of times.
        grow = max(needed - have, self.step, have // 8)
        new = -(-(have + grow) // self.step) * self.step
        if self.window:
            new = min(new, self.window)
        fresh_k = layout.empty(B, H, new - have, D, self.spec.k)
        fresh_v = layout.empty(B, H, new - have, D, self.spec.v)
        if self.k is None:
            self.k, self.v = fresh_k, fresh_v
        else:
            self.k = tuple(mx.concatenate([a, b], axis=2) for a, b in zip(self.k, fresh_k))
            self.v = tuple(mx.concatenate([a, b], axis=2) for a, b in zip(self.v, fresh_v))

    def _write(self, slot: int, kq: tuple, vq: tuple, src0: int, n: int):
        whole = src0 == 0 and n == kq[0].shape[2]  # (a decode token): write it without slicing a view
        for buf, new in zip(self.k + self.v, kq + vq):
            buf[:, :, slot : slot + n] = new if whole else new[:, :, src0 : src0 + n]

    def update_and_fetch(self, keys, values):
        B, H, L, D = keys.shape
        if self._tail_takes(L, keys, values):
            return self._append_to_tail(keys, values)
        self.flush()  # a prefill chunk sees every earlier token quantized
        fresh = raw = None
        if L == 1 and attention.COMPILE and self._means_ready() and keys.dtype == values.dtype:
            kq, vq = self._encode_token(keys, values)
        else:
            kq, vq, centered = self._encode(keys, values)
            if L > 1 and EXACT_CHUNK:
                fresh, raw = centered, (keys, values)
        exact = dict(fresh=fresh, fresh_raw=raw, k_mean=self.k_mean)
        prev = self.offset
        W = self.window
        if W is None:
            self._reserve(prev + L, B, H, D)
            self._write(prev, kq, vq, 0, L)
            self.offset += L
            view = attention.Compressed(self.k, self.v, self.offset, self.spec, v_mean=self.v_mean, **exact)
            return view, view
        if L == 1:
            self._ring_write(prev, 1, kq, vq, B, H, D)
            self.offset += 1
            view = attention.Compressed(self.k, self.v, self.length, self.spec, v_mean=self.v_mean)
            return view, view
        # Prefill chunk on a window layer: the queries need up to window-1 older tokens, which
        # writing the chunk into the ring may overwrite, so attention reads a temporal copy.
        n_old = min(prev, W - 1)
        if n_old:
            order = mx.array([p % W for p in range(prev - n_old, prev)])
            k_seen = tuple(mx.concatenate([mx.take(a, order, axis=2), b], axis=2) for a, b in zip(self.k, kq))
            v_seen = tuple(mx.concatenate([mx.take(a, order, axis=2), b], axis=2) for a, b in zip(self.v, vq))
        else:
            k_seen, v_seen = kq, vq
        self._ring_write(prev, L, kq, vq, B, H, D)
        self.offset += L
        view = attention.Compressed(k_seen, v_seen, n_old + L, self.spec, window=W, v_mean=self.v_mean, **exact)
        return view, view

    def _ring_write(self, prev: int, L: int, kq: tuple, vq: tuple, B: int, H: int, D: int):
        """Positions [prev, prev+L) into a window layer's ring (slot p % window), logging first what
        they evict; a chunk longer than the window keeps its last window tokens."""
        W = self.window
        self._reserve(min(prev + L, W), B, H, D)
        logged = self._log_evictions(prev, L, kq, vq)
        keep = min(L, W)
        first = prev + L - keep
        done = 0
        while done < keep:  # at most two runs: up to the ring's end, then from slot 0
            slot = (first + done) % W
            n = min(keep - done, W - slot)
            self._write(slot, kq, vq, L - keep + done, n)
            done += n
        if logged:
            self._tie_log()

    def _log_evictions(self, prev: int, L: int, kq: tuple, vq: tuple):
        """Before positions [prev, prev+L) are written, log the entries they evict (positions p-W).

        Only the last REWIND positions matter; an evicted position older than `prev` is read from
        the ring (still unwritten), a younger one from this chunk itself (a chunk longer than the
        window evicts some of its own tokens, which the ring never held).
        """
        W, R = self.window, REWIND
        end = prev + L
        self._undo_floor = max(self._undo_floor, end - R)
        lo = max(prev, end - R, W)
        if lo >= end:
            return False
        if self.undo_k is None:
            B, H = kq[0].shape[:2]
            D = self.k[0].shape[3] * 32 // self.spec.k.bits
            self.undo_k = layout.empty(B, H, R, D, self.spec.k)
            self.undo_v = layout.empty(B, H, R, D, self.spec.v)
        undo_k, undo_v = list(self.undo_k), list(self.undo_v)
        p = lo
        while p < end:
            src = p - W
            if src < prev:  # in the ring, slot src % W
                n = min(end - p, R - p % R, W - src % W, prev - src)
                k_from, v_from, s0 = self.k, self.v, src % W
            else:  # evicted by its own chunk
                n = min(end - p, R - p % R)
                k_from, v_from, s0 = kq, vq, src - prev
            d0 = p % R
            for buf, frm in zip(undo_k + undo_v, k_from + v_from):
                buf[:, :, d0 : d0 + n] = frm[:, :, s0 : s0 + n]
            p += n
        self.undo_k, self.undo_v = tuple(undo_k), tuple(undo_v)
        return True

    def _tie_log(self):
        # mlx-lm's decode loop evaluates only the logits: make the ring (which attention reads)
        # depend on the log's update, so it is computed every step instead of piling up a lazy
        # graph that keeps every old ring alive.
        ring = mx.depends([*self.k, *self.v], [*self.undo_k, *self.undo_v])
        self.k, self.v = tuple(ring[:3]), tuple(ring[3:])

    def _undo(self, new_offset: int):
        """Put back into the ring what positions [new_offset, offset) evicted."""
        W, R = self.window, REWIND
        lo = max(new_offset, W)
        # A rewind longer than the window would restore a slot more than once; the oldest wins.
        hi = min(self.offset, lo + W)
        k, v = list(self.k), list(self.v)
        p = lo
        while p < hi:
            n = min(hi - p, W - p % W, R - p % R)
            s0, d0 = p % R, p % W
            for buf, undo in zip(k + v, self.undo_k + self.undo_v):
                buf[:, :, d0 : d0 + n] = undo[:, :, s0 : s0 + n]
            p += n
        self.k, self.v = tuple(k), tuple(v)

    def max_trim(self) -> int:
        """How many tokens `trim` can take back exactly."""
        if self.window is None or self._undo_floor <= self.window:
            return self.offset
        return max(self.offset - self._undo_floor, 0)

    def _encode(self, keys, values) -> tuple[tuple, tuple, tuple]:
        """Rotate, center (fixing the means on first use) and quantize -> (K triple, V triple,
        the rotated and centered (K, V) that were quantized)."""
        if self.spec.k.rotate:
            keys = rotation.rotate(keys)
        if self.spec.v.rotate:
            values = rotation.rotate(values)
        if self.spec.k.center and self.k_mean is None:
            self.k_mean = keys.astype(mx.float32).mean(axis=2, keepdims=True)
        if self.spec.v.center and self.v_mean is None:
            self.v_mean = values.astype(mx.float32).mean(axis=2, keepdims=True)
        keys, values = _center(keys, self.k_mean), _center(values, self.v_mean)
        return layout.quantize(keys, self.spec.k), layout.quantize(values, self.spec.v), (keys, values)

    def _tail_takes(self, L: int, keys, values) -> bool:
        # Only once something is quantized (the means are fixed by then), and in a window layer
        # only if the tail is shorter than the window. A tail of another dtype or batch is flushed
        # first (the general path), then rebuilt.
        fits = self.tail_k is None or self.tail_n == 0 or (
            self.tail_k.dtype == keys.dtype and self.tail_k.shape[0] == keys.shape[0])
        return (TAIL > 0 and L == 1 and (self.window is None or TAIL < self.window) and self.k is not None
                and self._means_ready() and keys.dtype == values.dtype and fits)

    def _append_to_tail(self, keys, values):
        B, H, _, D = keys.shape
        if self.tail_n == TAIL:
            self.flush()
        if self.tail_k is None or self.tail_k.dtype != keys.dtype or self.tail_k.shape[0] != B:
            self.tail_k = mx.zeros((B, H, TAIL, D), keys.dtype)
            self.tail_v = mx.zeros((B, H, TAIL, D), keys.dtype)
        n = self.tail_n
        self.tail_k[:, :, n : n + 1] = keys
        self.tail_v[:, :, n : n + 1] = values
        self.tail_n += 1
        self.offset += 1
        tail = attention.ExactTail(self.tail_k, self.tail_v, self.tail_n, self.spec.k.rotate, self.spec.v.rotate,
                                   self.k_mean, self.v_mean)
        stored = self.stored
        if self.window is None:
            view = attention.Compressed(self.k, self.v, stored, self.spec, v_mean=self.v_mean, tail=tail)
            return view, view
        # The ring holds positions [stored - W, stored); the window now starts at offset - W, so
        # its oldest entries (the next ones a flush overwrites) are out of sight.
        W = self.window
        hidden = max(0, self.offset - W) - max(0, stored - W)
        skip = (max(0, stored - W) % W, hidden) if hidden else None
        view = attention.Compressed(self.k, self.v, min(stored, W), self.spec, v_mean=self.v_mean, tail=tail,
                                    skip=skip)
        return view, view

    def flush(self):
        """Quantize the exact tail into the cache (TAIL tokens at a time, or before a prefill chunk,
        a save or a trim into the quantized part); a no-op without one."""
        n = self.tail_n
        if not n:
            return
        tk, tv = (a if n == a.shape[2] else a[:, :, :n] for a in (self.tail_k, self.tail_v))
        kq, vq, _ = self._encode(tk, tv)
        first = self.stored
        B, H, _, D = tk.shape
        if self.window is None:
            self._reserve(first + n, B, H, D)
            self._write(first, kq, vq, 0, n)
        else:
            self._ring_write(first, n, kq, vq, B, H, D)
        self.tail_n = 0

    def _means_ready(self) -> bool:
        return (self.k_mean is not None or not self.spec.k.center) and (self.v_mean is not None or not self.spec.v.center)

    def _encode_token(self, keys, values) -> tuple[tuple, tuple]:
        """One decode token's K and V -> their stored triples, as the general path computes them.

        K and V go through as one stacked array (one rotation, one centering, one quantize when
        they share bits and group), so a decode token costs fewer kernel launches per layer.
        """
        if self._mean_pair is None:
            zero = mx.zeros((keys.shape[0], keys.shape[1], 1, keys.shape[3]), mx.float32)
            self._mean_pair = mx.concatenate([m if m is not None else zero for m in (self.k_mean, self.v_mean)])
        packed = _token_encoder(self.spec)(keys, values, self._mean_pair)
        return tuple(packed[:3]), tuple(packed[3:])

    @property
    def state(self):
        if self.k is None:
            return []
        means = [m for m in (self.k_mean, self.v_mean) if m is not None]
        undo = [*self.undo_k, *self.undo_v] if self.undo_k is not None else []
        tail = [self.tail_k, self.tail_v] if self.tail_k is not None else []
        return [*self.k, *self.v, *means, *undo, *tail]

    def is_trimmable(self) -> bool:
        # A wrapped ring can rewind only as far as its undo log reaches; see `can_trim`.
        return self.offset == 0 or self.max_trim() > 0

    def trim(self, n: int) -> int:
        """Take back the last n tokens, or as many as can be undone exactly; return how many."""
        n = min(self.max_trim(), n)
        untail = min(n, self.tail_n)  # the newest tokens may still be exact: drop them there
        self.tail_n -= untail
        self.offset -= untail
        rest = n - untail
        if rest and self.window is not None and self.offset > self.window:
            self._undo(self.offset - rest)
        self.offset -= rest
        return n

    def make_mask(self, N: int, return_array: bool = False, window_size: int | None = None):
        # Folio's attention builds its own causal and window masks from the cache's positions.
        return None if N == 1 else "causal"

    def size(self) -> int:
        return self.length

    def empty(self) -> bool:
        return self.k is None

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.state)


def _center(x, mean):
    return x if mean is None else x - mean


@functools.lru_cache(maxsize=16)
def _token_encoder(spec: layout.LayerSpec):
    """Rotate, center and quantize one decode token's K and V, stacked along the batch axis,
    compiled once per layer spec (shapes stay fixed while decoding) -> (*K's triple, *V's).

    Per row the arithmetic is the general path's (rotation along head_dim, fp32 centering, fp16
    cast, quantize by group), so the stored codes are bit for bit the same; subtracting a zero
    mean from a layer that does not center is exact.
    """
    def encode(keys, values, mean_pair):
        B = keys.shape[0]
        same_rotation = spec.k.rotate == spec.v.rotate
        if same_rotation:
            x = mx.concatenate([keys, values])
            x = rotation.rotate(x) if spec.k.rotate else x
        else:
            k = rotation.rotate(keys) if spec.k.rotate else keys
            v = rotation.rotate(values) if spec.v.rotate else values
            x = mx.concatenate([k, v])
        x = x - mean_pair if (spec.k.center or spec.v.center) else x
        # quantize's own cast, done before the halves are sliced so it fuses with the centering.
        x = x.astype(layout.SCALE_DTYPE)
        if (spec.k.bits, spec.k.group) == (spec.v.bits, spec.v.group):
            t = layout.quantize(x, spec.k)
            return (*(a[:B] for a in t), *(a[B:] for a in t))
        return (*layout.quantize(x[:B], spec.k), *layout.quantize(x[B:], spec.v))

    return mx.compile(encode)


# -- modes ---------------------------------------------------------------------------------------
def _policy(shape, mode: str) -> policy.Policy:
    return policy.choose(shape, mode)


def bytes_per_token(shape, mode: str) -> float:
    if mode == "fp16":
        return float(fp16_bytes_per_token(shape))
    return _policy(shape, mode).bytes_per_token(shape)


def _build(model, pol: policy.Policy) -> list:
    caches, i = [], 0
    for c in make_prompt_cache(model):
        if type(c) is KVCache:
            spec, window = pol.layers[i], None
        elif type(c) is RotatingKVCache and c.keep == 0:
            spec, window = pol.layers[i], c.max_size
        else:
            caches.append(c)  # not an attention KV cache (e.g. a state-space layer): leave it
            continue
        caches.append(QuantizedCache(spec, window) if spec else c)
        i += 1
    return caches


def _routes(loaded, pol: policy.Policy) -> str | None:
    """Why this model cannot use compressed caches (None if it can): one token through the seam."""
    if "kv_route_error" not in loaded.extra:
        caches = _build(loaded.model, pol)
        expected = sum(isinstance(c, QuantizedCache) for c in caches)
        before = attention.calls
        try:
            mx.eval(loaded.model(mx.array([[0]]), cache=caches))
            error = None
            if attention.calls - before != expected:
                error = "its attention does not go through mlx-lm's scaled_dot_product_attention"
        except Exception as e:  # any failure here means: keep the plain cache
            error = f"{type(e).__name__}: {str(e)[:200]}"
        loaded.extra["kv_route_error"] = error
    return loaded.extra["kv_route_error"]


def make_cache(loaded, mode: str) -> list:
    if mode == "fp16":
        return make_prompt_cache(loaded.model)
    pol = _policy(loaded.shape, mode)
    attention.install()
    error = _routes(loaded, pol)
    if error:
        logger.warning("KV mode %s is not possible for %s (%s); using fp16 caches", mode, loaded.model_id, error)
        return make_prompt_cache(loaded.model)
    caches = _build(loaded.model, pol)
    for c in caches:
        if isinstance(c, QuantizedCache):
            c.policy_name = pol.name
    return caches


def describe(caches, mode: str) -> dict:
    """Policy, bits per stored K/V element and attention path of a live cache, for the stats."""
    quant = [c for c in caches if isinstance(c, QuantizedCache)]
    if not quant:
        return {"kv_policy": "fp16", "kv_bits_per_element": 16.0, "attention_path": "mlx"}
    held, bits = 0, 0.0
    for c in caches:
        if isinstance(c, QuantizedCache):
            # The exact tail's tokens are held at the model's precision until quantized.
            stored = c.stored
            parts = [(max(min(stored, c.window) if c.window else stored, 1), c.spec.bits_per_element)]
            if c.tail_n:
                parts.append((c.tail_n, 8.0 * c.tail_k.itemsize))
        elif hasattr(c, "keys") and c.keys is not None:
            parts = [(max(c.size(), 1), 16.0)]
        else:
            continue
        for n, b in parts:
            held += n
            bits += n * b
    return {
        "kv_policy": getattr(quant[0], "policy_name", mode),
        "kv_bits_per_element": bits / max(held, 1),
        "attention_path": attention.path(),
    }


def can_trim(caches, n: int) -> bool:
    """Whether every layer can take back its last n tokens exactly (mlx-lm's caches included)."""
    return all(
        c.max_trim() >= n if isinstance(c, QuantizedCache) else c.is_trimmable() and c.offset >= n
        for c in caches
    )


def cache_bytes(caches) -> int:
    return sum(c.nbytes for c in caches if hasattr(c, "nbytes"))


def fp16_bytes_per_token(shape) -> int:
    """Bytes one token costs across all KV layers in an fp16 cache (K and V)."""
    return shape.kv_layers * 2 * shape.n_kv_heads * shape.head_dim * FP16_BYTES


def fp16_bytes_for(shape, tokens: int) -> int:
    """What an fp16 cache would hold for `tokens` tokens, sliding windows included."""
    per_layer = 2 * shape.n_kv_heads * shape.head_dim * FP16_BYTES
    return sum(per_layer * (min(tokens, w) if w else tokens) for w in shape.windows)


# -- save and restore ----------------------------------------------------------------------------
def _fp16_layer(c) -> tuple[dict, list]:
    n = c.size()
    if c.keys is None:
        return {"kind": "empty"}, []
    if isinstance(c, RotatingKVCache):
        meta = {"kind": "rotating", "offset": c.offset, "keep": c.keep, "max_size": c.max_size, "idx": c._idx}
        return meta, [c.keys, c.values]
    return {"kind": "fp16", "offset": c.offset}, [c.keys[:, :, :n], c.values[:, :, :n]]


def save_cache(caches, path, *, model_id: str, policy: str):
    """Write the valid slots of every layer to a safetensors file, with what it belongs to."""
    arrays, layers = {}, []
    for i, c in enumerate(caches):
        if isinstance(c, QuantizedCache):
            c.flush()  # the file holds quantized slots only
            meta = {"kind": "quantized", "offset": c.offset, "window": c.window, "spec": c.spec.to_dict(),
                    "policy_name": getattr(c, "policy_name", policy)}
            data = []
            if c.length:
                data = [a[:, :, : c.length] for a in (*c.k, *c.v)]
                data += [m for m in (c.k_mean, c.v_mean) if m is not None]
        elif isinstance(c, (KVCache, RotatingKVCache)):
            meta, data = _fp16_layer(c)
        else:
            raise CacheFileError(f"Cannot save a cache of type {type(c).__name__}.")
        for j, a in enumerate(data):
            arrays[f"{i}.{j}"] = a
        layers.append(meta)
    tokens = max((c.offset for c in caches if hasattr(c, "offset")), default=0)
    metadata = {
        "format": FILE_FORMAT, "model_id": model_id, "policy": policy, "token_count": str(tokens),
        "layers": json.dumps(layers),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part.safetensors")
    mx.save_safetensors(str(tmp), arrays, metadata)
    tmp.replace(path)  # never a half-written cache file under the real name


def load_cache(path, *, model_id: str, policy: str):
    """Read a saved cache back -> (caches, token_count); refuse one made for another model or policy."""
    path = Path(path)
    try:
        arrays, meta = mx.load(str(path), return_metadata=True)
    except Exception as e:  # mlx raises RuntimeError/ValueError for missing or corrupt files
        raise CacheFileError(f"The saved cache {path.name} cannot be read ({str(e)[:120]}).") from None
    if meta.get("format") != FILE_FORMAT:
        raise CacheFileError(f"{path.name} is not a Folio cache file (or one from an incompatible version).")
    if meta.get("model_id") != model_id:
        raise CacheFileError(f"The saved cache was made with {meta.get('model_id')!r}, not {model_id!r}; it will be rebuilt.")
    if meta.get("policy") != policy:
        raise CacheFileError(f"The saved cache uses KV policy {meta.get('policy')!r}, not {policy!r}; it will be rebuilt.")
    try:
        layers = json.loads(meta["layers"])
        caches = [_restore(m, [arrays[f"{i}.{j}"] for j in range(_n_arrays(m))]) for i, m in enumerate(layers)]
        tokens = int(meta["token_count"])
    except (KeyError, ValueError, TypeError) as e:
        raise CacheFileError(f"The saved cache {path.name} is damaged ({e}).") from None
    return caches, tokens


def _n_arrays(meta: dict) -> int:
    if meta["kind"] == "quantized":
        if not meta["offset"]:
            return 0
        spec = layout.LayerSpec.from_dict(meta["spec"])
        return 6 + spec.k.center + spec.v.center
    return {"fp16": 2, "rotating": 2, "empty": 0}[meta["kind"]]


def _restore(meta: dict, data: list):
    kind = meta["kind"]
    if kind == "quantized":
        c = QuantizedCache(layout.LayerSpec.from_dict(meta["spec"]), meta["window"])
        c.offset, c.policy_name = meta["offset"], meta.get("policy_name", "")
        c._undo_floor = c.offset  # the undo log is not saved: a wrapped ring cannot rewind yet
        if data:
            c.k, c.v = tuple(data[:3]), tuple(data[3:6])
            means = iter(data[6:])
            c.k_mean = next(means) if c.spec.k.center else None
            c.v_mean = next(means) if c.spec.v.center else None
        return c
    if kind == "rotating":
        c = RotatingKVCache(max_size=meta["max_size"], keep=meta["keep"])
        c.keys, c.values = data
        c.offset, c._idx = meta["offset"], meta["idx"]
        return c
    c = KVCache()
    if kind == "fp16":
        c.keys, c.values = data
        c.offset = meta["offset"]
    return c

