"""One conversation's generation: chat template -> chunked prefill -> streaming decode.

The prompt cache lives as long as the conversation, so turn N+1 prefills only what turn N
did not already see (the longest common token prefix). Decoding is mlx-lm's own
`generate_step`, so Folio's decode speed is mlx-lm's.
"""

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import mlx.core as mx
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import trim_prompt_cache
from mlx_lm.sample_utils import make_logits_processors, make_sampler

from app import log
from app.engine import kvcache, memory, prefill
from app.engine.errors import Cancelled, ContextOverflow, FolioError
from app.engine.stats import TurnStats

logger = log.get("session")

# Smaller chunks on the CPU keep progress and cancellation responsive; GPUs want big ones.
PREFILL_CHUNK = {"cpu": 512}.get(memory.backend(), 2048)


@dataclass
class GenParams:
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


class ChatSession:
    """Holds one conversation's KV cache between turns. Use from one thread only."""

    def __init__(self, loaded, kv_mode: str = "fp16", context_limit: int | None = None,
                 prefill_chunk: int = PREFILL_CHUNK):
        self.loaded = loaded
        self.kv_mode = kv_mode
        model_max = loaded.shape.max_context
        self.context_limit = min(context_limit, model_max) if context_limit else model_max
        self.prefill_chunk = prefill_chunk
        self.cache: list | None = None
        self.cache_tokens: list[int] = []
        self.stats = TurnStats()
        self.generated: list[int] = []  # token ids of the last answer, EOS included

    # -- prompt -----------------------------------------------------------
    def encode(self, messages: list[dict]) -> list[int]:
        tok = self.loaded.tokenizer
        if getattr(tok, "has_chat_template", False):
            return list(tok.apply_chat_template(messages, add_generation_prompt=True))
        # A base model without a template: a plain transcript it can continue.
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages) + "Assistant:"
        return list(tok.encode(text))

    def count_tokens(self, text: str) -> int:
        return len(self.loaded.tokenizer.encode(text, add_special_tokens=False))

    # -- cache ------------------------------------------------------------
    def reset(self):
        self.cache, self.cache_tokens = None, []

    def _reuse(self, tokens: list[int]) -> int:
        """Trim the cache to its longest prefix shared with `tokens`; return that prefix length."""
        if self.cache is None:
            self.cache = kvcache.make_cache(self.loaded, self.kv_mode)
            self.cache_tokens = []
            return 0
        n = 0
        limit = min(len(tokens), len(self.cache_tokens))
        while n < limit and tokens[n] == self.cache_tokens[n]:
            n += 1
        n = min(n, len(tokens) - 1)  # at least one token must be fed to get logits
        extra = len(self.cache_tokens) - n
        if extra > 0:
            if kvcache.can_trim(self.cache, extra):
                trim_prompt_cache(self.cache, extra)
            else:
                logger.info("cache cannot be trimmed by %d tokens; prefilling from scratch", extra)
                self.reset()
                return self._reuse(tokens)
        self.cache_tokens = self.cache_tokens[:n]
        return n

    # -- generation -------------------------------------------------------
    def check_fits(self, tokens: int):
        if tokens > self.context_limit:
            raise ContextOverflow(tokens, self.context_limit)
        shape = self.loaded.shape
        memory.check_fit(
            self.loaded.weights_bytes, kvcache.bytes_per_token(shape, self.kv_mode), tokens, self.kv_mode
        )

    def generate(
        self,
        messages: list[dict],
        params: GenParams | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[str]:
        """Yield text pieces of the answer; `self.stats` holds the turn's numbers afterwards.

        Raises Cancelled if `should_stop` turns true during prefill; during decode it ends
        the answer with finish_reason "stopped".
        """
        return self.generate_tokens(self.encode(messages), params, on_progress, should_stop)

    def generate_tokens(self, prompt, params=None, on_progress=None, should_stop=None) -> Iterator[str]:
        params = params or GenParams()
        should_stop = should_stop or (lambda: False)
        prompt = list(prompt)
        self.check_fits(len(prompt) + 1)
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        cached = self._reuse(prompt)
        stats = self.stats = TurnStats(
            prompt_tokens=len(prompt), cached_tokens=cached, context_limit=self.context_limit,
            backend=memory.backend(), kv_policy=self.kv_mode,
        )
        self._prefill(prompt, cached, on_progress, should_stop)

        if params.seed is not None:
            mx.random.seed(params.seed)
        sampler = make_sampler(params.temperature, params.top_p, params.min_p)
        processors = self._processors(prompt, params)
        room = self.context_limit - len(prompt)
        max_tokens = min(params.max_tokens, room)
        tok = self.loaded.tokenizer
        detok = tok.detokenizer
        detok.reset()
        stop = _StopMatcher(params.stop)
        generated: list[int] = []
        t_first = None
        finish = "length" if max_tokens < params.max_tokens else "max_tokens"
        steps = generate_step(
            mx.array(prompt[len(self.cache_tokens):]), self.loaded.model, prompt_cache=self.cache,
            max_tokens=max_tokens, sampler=sampler, logits_processors=processors,
        )
        try:
            for token, _ in steps:
                if t_first is None:
                    t_first = time.perf_counter()
                    stats.ttft_s = t_first - t0
                generated.append(token)
                if token in tok.eos_token_ids:
                    finish = "stop"
                    break
                detok.add_token(token)
                piece, hit = stop.feed(detok.last_segment)
                if piece:
                    yield piece
                if hit:
                    finish = "stop_string"
                    break
                if should_stop():
                    finish = "stopped"
                    break
            else:
                if finish == "length":
                    finish = "context_full"
            if finish not in ("stop_string",):
                detok.finalize()
                piece, _ = stop.feed(detok.last_segment, final=True)
                if piece:
                    yield piece
        finally:
            steps.close()
            # Every token handed out was already fed to the model by generate_step.
            self.generated = generated
            self.cache_tokens = (prompt + generated)[: self.cache[0].offset if self.cache else 0]
            self._finish(stats, prompt, generated, t0, t_first, finish)

    def _prefill(self, prompt, start, on_progress, should_stop):
        """Feed all but the last prompt token in chunks; the last goes through generate_step."""
        total = len(prompt)
        if on_progress:
            on_progress(start, total)

        def on_chunk(n):
            self.cache_tokens = prompt[: start + n]
            if on_progress:
                on_progress(start + n, total)

        try:
            done = prefill.feed(self.loaded.model, self.cache, prompt[start:-1], self.prefill_chunk, should_stop,
                                on_chunk)
        except RuntimeError as e:
            self.reset()
            raise FolioError(f"Prefill failed: {e}. Try a shorter context or the int4 KV mode.") from None
        if start + done < total - 1:
            raise Cancelled()

    def _processors(self, prompt, params):
        if not params.repetition_penalty or params.repetition_penalty == 1.0:
            return None
        history = mx.array(prompt)
        procs = make_logits_processors(repetition_penalty=params.repetition_penalty)
        # generate_step only knows the tokens it was handed; give the penalty the whole prompt too.
        return [lambda toks, logits, p=p: p(mx.concatenate([history, toks]), logits) for p in procs]

    def _finish(self, stats, prompt, generated, t0, t_first, finish):
        now = time.perf_counter()
        new = len(prompt) - stats.cached_tokens
        if t_first:
            stats.prefill_tps = new / max(t_first - t0, 1e-9)
            if len(generated) > 1:
                stats.decode_tps = (len(generated) - 1) / max(now - t_first, 1e-9)
        stats.generated_tokens = len(generated)
        stats.finish_reason = finish
        stats.peak_memory_bytes = mx.get_peak_memory()
        stats.active_memory_bytes = mx.get_active_memory()
        stats.rss_bytes = memory.rss_bytes()
        stats.context_used = len(self.cache_tokens)
        if self.cache:
            stats.kv_bytes = kvcache.cache_bytes(self.cache)
            stats.kv_bytes_fp16 = kvcache.fp16_bytes_for(self.loaded.shape, stats.context_used)
            for k, v in kvcache.describe(self.cache, self.kv_mode).items():
                setattr(stats, k, v)
            # Per stored element, not allocated bytes: preallocated blocks would make a short
            # conversation look worse than its policy.
            stats.kv_compression = 16.0 / stats.kv_bits_per_element
        logger.info("turn: %s", stats.to_dict())


class _StopMatcher:
    """Holds back text that could be the start of a stop string, so none of one is shown."""

    def __init__(self, stops):
        self.stops = [s for s in stops if s]
        self.keep = max((len(s) for s in self.stops), default=1) - 1
        self.buf = ""

    def feed(self, text: str, final: bool = False) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        self.buf += text
        for s in self.stops:
            i = self.buf.find(s)
            if i >= 0:
                out, self.buf = self.buf[:i], ""
                return out, True
        if final:
            out, self.buf = self.buf, ""
            return out, False
        cut = max(0, len(self.buf) - self.keep)
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return out, False
