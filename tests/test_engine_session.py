"""The engine spine: greedy parity with mlx-lm, multi-turn cache reuse, stops, cancellation."""

import mlx.core as mx
import pytest
from mlx_lm import stream_generate
from mlx_lm.sample_utils import make_sampler

from app.engine import loader
from app.engine.errors import Cancelled, ContextOverflow
from app.engine.session import ChatSession, GenParams, _StopMatcher

GREEDY = GenParams(max_tokens=24, temperature=0.0)


@pytest.fixture(scope="module", params=["llama", "qwen3", "gemma3_text"])
def loaded(request, model_dir):
    return loader.load(str(model_dir(request.param)))


def mlx_lm_tokens(loaded, prompt, n):
    out = []
    for r in stream_generate(loaded.model, loaded.tokenizer, mx.array(prompt), max_tokens=n, sampler=make_sampler(0.0)):
        if r.finish_reason is None or r.finish_reason == "length":
            out.append(r.token)
    return out


def test_greedy_equals_mlx_lm_generate(loaded):
    messages = [{"role": "user", "content": "The quick brown fox jumps over"}]
    s = ChatSession(loaded, kv_mode="fp16")
    prompt = s.encode(messages)
    text = "".join(s.generate(messages, GREEDY))
    ours = [t for t in s.generated if t not in loaded.tokenizer.eos_token_ids]
    assert ours == mlx_lm_tokens(loaded, prompt, GREEDY.max_tokens)[: len(ours)]
    assert len(ours) > 0
    # Streaming detokenization (multi-byte characters split over tokens) equals a one-shot decode.
    assert text == loaded.tokenizer.decode(ours)


def test_second_turn_reuses_cache_and_matches_fresh_run(loaded):
    convo = [{"role": "user", "content": "hello fox"}]
    s = ChatSession(loaded, kv_mode="fp16")
    answer = "".join(s.generate(convo, GREEDY))
    assert s.stats.cached_tokens == 0
    convo += [{"role": "assistant", "content": answer}, {"role": "user", "content": "and the lazy dog?"}]
    second = "".join(s.generate(convo, GREEDY))
    if not any(loaded.shape.windows):
        # A sliding-window cache cannot rewind past its window, so when the re-rendered answer
        # differs from the generated tokens it starts over; full-attention caches always reuse.
        assert s.stats.cached_tokens > 0
    assert s.stats.cached_tokens + (s.stats.prompt_tokens - s.stats.cached_tokens) == s.stats.prompt_tokens
    fresh = ChatSession(loaded, kv_mode="fp16")
    assert "".join(fresh.generate(convo, GREEDY)) == second
    assert fresh.generated == s.generated


@pytest.mark.parametrize("mode", ["int4", "auto"])
def test_second_turn_reuses_a_compressed_cache(loaded, mode):
    """Compressed caches rewind even a wrapped sliding window (its undo log), so every model reuses.

    The answer itself is compared in test_kvcache_rewind.py, against a run fed in the same chunks.
    """
    # Long enough that Gemma's 32-token window has wrapped when the re-rendered answer diverges.
    convo = [{"role": "user", "content": "hello fox, tell me about the quick brown fox and the lazy dog"}]
    s = ChatSession(loaded, kv_mode=mode)
    answer = "".join(s.generate(convo, GREEDY))
    convo += [{"role": "assistant", "content": answer}, {"role": "user", "content": "and the lazy dog?"}]
    list(s.generate(convo, GREEDY))
    assert s.stats.cached_tokens > max(w or 0 for w in loaded.shape.windows)


def test_stats_are_filled(loaded):
    s = ChatSession(loaded, kv_mode="fp16")
    list(s.generate([{"role": "user", "content": "hi"}], GREEDY))
    st = s.stats
    assert st.prompt_tokens > 0 and st.generated_tokens > 0
    assert st.ttft_s > 0 and st.prefill_tps > 0
    assert st.kv_bytes > 0 and st.kv_bytes_fp16 > 0
    assert st.context_used == st.prompt_tokens + st.generated_tokens
    assert st.context_limit == loaded.shape.max_context
    assert st.backend in ("cpu", "cuda", "metal")
    assert st.peak_memory_bytes > 0 and st.rss_bytes > 0


def test_stop_string_cuts_the_answer(model_dir):
    loaded = loader.load(str(model_dir("gemma3_text")))
    messages = [{"role": "user", "content": "hello fox"}]
    full = "".join(ChatSession(loaded).generate(messages, GREEDY))
    stop = full[6:9]
    assert len(stop) == 3
    cut = "".join(ChatSession(loaded).generate(messages, GenParams(max_tokens=24, temperature=0.0, stop=[stop])))
    assert cut == full[: full.index(stop)]


def test_stop_matcher_holds_back_partial_matches():
    m = _StopMatcher(["STOP"])
    assert m.feed("abcST") == ("ab", False)
    assert m.feed("OPxyz") == ("cST"[:1], True)


def test_cancel_during_decode_keeps_what_was_said(model_dir):
    loaded = loader.load(str(model_dir("llama")))
    s = ChatSession(loaded)
    seen = []
    pieces = s.generate([{"role": "user", "content": "go"}], GenParams(max_tokens=50, temperature=0.0),
                        should_stop=lambda: len(seen) >= 3)
    for p in pieces:
        seen.append(p)
    assert s.stats.finish_reason in ("stopped", "stop")
    assert s.stats.generated_tokens <= 4


def test_cancel_during_prefill_leaves_session_usable(model_dir):
    loaded = loader.load(str(model_dir("llama")))
    messages = [{"role": "user", "content": "one two three " * 30}]
    s = ChatSession(loaded, prefill_chunk=8)
    progress = []
    with pytest.raises(Cancelled):
        list(s.generate(messages, GREEDY, on_progress=lambda d, t: progress.append((d, t)),
                        should_stop=lambda: len(progress) > 2))
    assert progress[0][0] == 0 and progress[-1][1] == len(s.encode(messages))
    again = "".join(s.generate(messages, GREEDY))
    assert again == "".join(ChatSession(loaded).generate(messages, GREEDY))


def test_prompt_over_context_is_refused_with_the_overflow(model_dir):
    loaded = loader.load(str(model_dir("llama")))
    s = ChatSession(loaded, context_limit=16)
    with pytest.raises(ContextOverflow) as e:
        list(s.generate([{"role": "user", "content": "word " * 40}], GREEDY))
    assert e.value.limit == 16 and e.value.over > 0
    assert f"{e.value.over:,} over" in str(e.value)


def test_answer_stops_at_context_limit(model_dir):
    loaded = loader.load(str(model_dir("llama")))
    loaded.tokenizer.eos_token_ids = set()
    s = ChatSession(loaded, context_limit=40)
    list(s.generate([{"role": "user", "content": "hi"}], GenParams(max_tokens=100, temperature=0.0)))
    assert s.stats.context_used <= 40
    assert s.stats.finish_reason == "context_full"


def test_sampling_is_reproducible_with_a_seed(model_dir):
    loaded = loader.load(str(model_dir("qwen3")))
    p = GenParams(max_tokens=16, temperature=1.0, top_p=0.9, min_p=0.05, repetition_penalty=1.3, seed=7)
    msgs = [{"role": "user", "content": "hi"}]
    a = ChatSession(loaded)
    b = ChatSession(loaded)
    list(a.generate(msgs, p)), list(b.generate(msgs, p))
    assert a.generated == b.generated
