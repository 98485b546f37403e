"""Whether documents fit, and what is sent when they do not: tokens, KV memory, prefill time.

The whole document is the default whenever it fits the context left and the memory its KV
cache needs; otherwise the plan says so with the numbers, offers a larger context where the
model and memory allow one, and falls back to the most relevant passages, labelled as such.
Nothing is ever cut silently. Call it on the thread that owns the model (it may tokenize).
"""

import math
from dataclasses import dataclass, field
from typing import Callable

from app.documents import passages, prompt
from app.documents.errors import DocumentTooLong
from app.engine.errors import FolioError

ANSWER_RESERVE = 512  # tokens kept free for the answer
LONG_PREFILL_S = 30.0  # above this, warn before sending


class TokenCounter:
    """Tokens in a text, no special tokens. Equal for the same tokenizer, so documents cache their counts."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        # The Rust tokenizer directly: no "longer than the maximum length" warning for a whole book.
        self._backend = getattr(getattr(tokenizer, "_tokenizer", tokenizer), "backend_tokenizer", None)

    def __call__(self, text: str) -> int:
        if self._backend is not None:
            return len(self._backend.encode(text, add_special_tokens=False).ids)
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def __eq__(self, other):
        return isinstance(other, TokenCounter) and other.tokenizer is self.tokenizer

    def __hash__(self):
        return id(self.tokenizer)


@dataclass
class Budget:
    """What a plan needs to know about the model and the session; tests build one by hand."""

    count: Callable[[str], int]  # text -> tokens, with the model's tokenizer
    context_limit: int
    model_max_context: int
    shape: object  # engine.loader.ModelShape
    weights_bytes: int
    kv_mode: str = "fp16"
    available_bytes: int | None = None  # None: what engine.memory says this machine can give
    prefill_tps: float = 0.0  # measured on this machine; 0 means unknown

    @classmethod
    def from_session(cls, session, prefill_tps: float | None = None) -> "Budget":
        loaded = session.loaded
        return cls(
            count=TokenCounter(loaded.tokenizer), context_limit=session.context_limit,
            model_max_context=loaded.shape.max_context, shape=loaded.shape,
            weights_bytes=loaded.weights_bytes, kv_mode=session.kv_mode,
            prefill_tps=prefill_tps if prefill_tps is not None else session.stats.prefill_tps,
        )

    def kv_bytes(self, tokens: int, mode: str | None = None) -> float | None:
        """KV cache bytes for `tokens` in `mode` (default: the session's); None if that mode is not built."""
        from app.engine import kvcache

        fp16 = kvcache.fp16_bytes_for(self.shape, tokens)
        mode = mode or self.kv_mode
        if mode == "fp16":
            return float(fp16)
        try:
            per_token = kvcache.bytes_per_token(self.shape, mode)
        except FolioError:
            return None
        # Scaling the fp16 figure keeps sliding-window layers capped at their window.
        return fp16 * per_token / kvcache.fp16_bytes_per_token(self.shape)

    def memory_tokens(self) -> int:
        """The most tokens whose KV cache fits in memory beside the weights (fp16 if the mode is not built)."""
        from app.engine import memory

        available = memory.usable_bytes() if self.available_bytes is None else self.available_bytes
        room = available - self.weights_bytes
        mode = self.kv_mode if self.kv_bytes(1) is not None else "fp16"
        if room <= 0:
            return 0
        # Sliding-window layers stop growing at their window, so search rather than divide.
        lo, hi = 0, 1
        while self.kv_bytes(hi, mode) <= room and hi < 10**9:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.kv_bytes(mid, mode) <= room else (lo, mid)
        return lo


@dataclass
class DocFit:
    """One document's chip: what it is, what it costs, and how it will be sent."""

    name: str
    kind: str
    pages: int
    size: str  # "300 pages" / "420 lines"
    tokens: int
    kv_mode: str
    kv_bytes: float | None  # in the session's KV mode; None when that mode is not available
    kv_bytes_fp16: int
    prefill_s: float | None
    mode: str = "full"  # "full" | "passages"
    passages: list[str] = field(default_factory=list)  # labels sent, when mode is "passages"
    notices: list[str] = field(default_factory=list)

    def chip(self) -> str:
        kv = f"KV {fmt(self.kv_bytes_fp16)} in fp16"
        if self.kv_mode != "fp16":
            mode = fmt(self.kv_bytes) if self.kv_bytes is not None else "not available"
            kv = f"KV {mode} in {self.kv_mode}, {fmt(self.kv_bytes_fp16)} in fp16"
        text = f"{self.name} · {self.size} · {self.tokens:,} tokens · {kv}"
        if self.prefill_s is not None:
            text += f" · reading ≈ {duration(self.prefill_s)}"
        if self.mode == "passages":
            text += f" · {len(self.passages)} passages only"
        return text

    def to_dict(self) -> dict:
        return {"name": self.name, "pages": self.pages, "tokens": self.tokens, "mode": self.mode}


@dataclass
class Plan:
    docs: list[DocFit]
    fits: bool  # every document whole fits the context left and memory
    mode: str  # "full" when all are whole, else "passages"
    tokens: int  # all documents whole, markers included
    sent_tokens: int  # what the message will actually carry
    room: int  # tokens the documents may take: context left, less the answer's reserve, within memory
    context_limit: int
    used_tokens: int
    kv_mode: str
    kv_bytes: float | None
    kv_bytes_fp16: int
    prefill_s: float | None
    long_prefill: bool
    larger_context: int | None  # a context that takes everything whole, when model and memory allow
    reason: str  # why it does not fit, with the numbers; "" when it fits
    warnings: list[str]
    message: str  # the user's message: documents then question

    def summary(self) -> str:
        if self.fits:
            return f"{len(self.docs)} document(s), {self.tokens:,} tokens, fit whole ({self.room:,} tokens of room)."
        return self.reason

    def chips(self) -> list[dict]:
        """One plain dict per document for the UI's chips: every field is display text or a flag."""
        out = []
        for d in self.docs:
            if d.mode == "full":
                fit = f"fits ({self.room - self.tokens:,} tokens left)" if self.fits else "goes in whole"
            else:
                fit = f"does not fit ({self.room:,} tokens of room): {len(d.passages)} passages only"
            memory = f"KV {fmt(d.kv_bytes_fp16)} in fp16"
            if d.kv_mode != "fp16":
                mode = fmt(d.kv_bytes) if d.kv_bytes is not None else "not available"
                memory = f"KV {mode} in {d.kv_mode} · {fmt(d.kv_bytes_fp16)} in fp16"
            warning = next((w for w in self.warnings if w.startswith("Reading this")), "") if self.long_prefill else ""
            detail = [d.chip(), *d.notices] + ([self.reason] if d.mode != "full" else []) + ([warning] if warning else [])
            out.append({
                "name": d.name, "summary": f"{d.size} · {d.tokens:,} tokens · {fit}", "memory": memory,
                "whole": d.mode == "full", "warning": warning, "detail": "\n".join(detail),
            })
        return out


def fmt(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def duration(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s" if s >= 1 else "<1 s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def full_tokens(doc, count) -> int:
    key = ("full", count)
    if key not in doc.token_cache:
        doc.token_cache[key] = count(prompt.full(doc))
    return doc.token_cache[key]


def plan(docs, budget: Budget, question: str = "", used_tokens: int = 0, reserve: int = ANSWER_RESERVE,
         whole: bool = False) -> Plan:
    """Decide how `docs` go into the next message. `used_tokens`: the prompt without them (history,
    template, question). `whole=True` raises DocumentTooLong instead of falling back to passages."""
    count = budget.count
    # The header and tags count as conversation, so document figures are the documents' own.
    used_tokens += count(prompt.HEADER) + 2 * len(docs) if docs else 0
    sizes = [full_tokens(d, count) for d in docs]
    total = sum(sizes)
    need = used_tokens + total + reserve
    mem_tokens = budget.memory_tokens()
    limit = min(budget.context_limit, mem_tokens)
    room = limit - used_tokens - reserve
    fits = need <= limit
    tps = budget.prefill_tps

    def fit(d, n):
        return DocFit(d.name, d.kind, d.page_count if d.kind == "pdf" else 1, d.describe(), n, budget.kv_mode,
                      budget.kv_bytes(n), _fp16(budget, n),
                      n / tps if tps > 0 else None, notices=list(d.notices))

    fits_ = [fit(d, n) for d, n in zip(docs, sizes)]
    larger, reason = None, ""
    if not fits:
        larger, reason = _explain(budget, total, used_tokens, reserve, need, mem_tokens)
        if whole:
            raise DocumentTooLong(reason)
    blocks, warnings = ([prompt.full(d) for d in docs], []) if fits else _passages(docs, sizes, fits_, budget, room, question)
    sent = count("\n\n".join(blocks)) if not fits else total
    prefill_s = (sent + used_tokens) / tps if tps > 0 else None
    long_prefill = prefill_s is not None and prefill_s > LONG_PREFILL_S
    for f in fits_:
        warnings = f.notices + warnings
    if long_prefill:
        warnings.append(f"Reading this will take about {duration(prefill_s)} "
                        f"(prefill at {tps:,.0f} tokens/s measured on this machine); it can be cancelled.")
    return Plan(
        docs=fits_, fits=fits, mode="full" if fits else "passages", tokens=total, sent_tokens=sent, room=room,
        context_limit=budget.context_limit, used_tokens=used_tokens, kv_mode=budget.kv_mode,
        kv_bytes=budget.kv_bytes(total), kv_bytes_fp16=_fp16(budget, total), prefill_s=prefill_s,
        long_prefill=long_prefill, larger_context=larger, reason=reason, warnings=warnings,
        message=prompt.compose(question, blocks),
    )


def _fp16(budget, tokens) -> int:
    return int(budget.kv_bytes(tokens, "fp16"))


def _explain(budget, total, used, reserve, need, mem_tokens) -> tuple[int | None, str]:
    left = max(0, budget.context_limit - used - reserve)
    reason = (f"The documents are {total:,} tokens; {left:,} tokens of context are left "
              f"(limit {budget.context_limit:,}, {used:,} used by the conversation, {reserve:,} kept for the answer).")
    if mem_tokens < need:
        reason = (f"The documents are {total:,} tokens; memory holds a KV cache of at most {mem_tokens:,} tokens "
                  f"in {budget.kv_mode} beside the {fmt(budget.weights_bytes)} of weights, and {need:,} are needed.")
    ceiling = min(budget.model_max_context, mem_tokens)
    if need <= ceiling:
        larger = min(ceiling, math.ceil(need / 1024) * 1024)
        kv = budget.kv_bytes(larger)
        kv_text = f"{fmt(kv)} of KV cache in {budget.kv_mode}" if kv is not None else f"{fmt(_fp16(budget, larger))} of KV cache in fp16"
        return larger, reason + f" A context of {larger:,} tokens would hold them whole ({kv_text})."
    if need > budget.model_max_context:
        return None, reason + f" The model's maximum context is {budget.model_max_context:,} tokens."
    return None, reason + f" Memory allows at most {mem_tokens:,} tokens in {budget.kv_mode}."


def _passages(docs, sizes, fits_, budget, room, question) -> tuple[list[str], list[str]]:
    """Small documents whole (each within its share of the room), the rest as ranked passages."""
    count = budget.count
    if room <= 0:
        raise DocumentTooLong(f"There is no room left in the context for documents ({room:,} tokens); "
                              "start a new chat or raise the context length.")
    order = sorted(range(len(docs)), key=lambda i: sizes[i])
    remaining, partial = room, []
    for k, i in enumerate(order):
        if sizes[i] <= remaining / (len(order) - k):
            remaining -= sizes[i]
        else:
            partial.append(i)
    secs = {i: passages.sections(docs[i], i) for i in partial}
    for i in partial:
        remaining -= count(prompt.excerpt(docs[i], [], len(secs[i])))
    index = passages.Index([s for i in partial for s in secs[i]])
    try:
        ranked = index.rank(question)
    finally:
        index.close()
    matched = bool(ranked)
    if not matched:  # no usable words in the question: the documents' opening pages, said so
        ranked = [s for i in partial for s in secs[i]]
    chosen = passages.select(ranked, lambda s: count(prompt.section(s)) + 2, max(0, remaining))
    blocks, warnings = [], []
    for i, d in enumerate(docs):
        if i not in secs:
            blocks.append(prompt.full(d))
            continue
        mine = [s for s in chosen if s.doc == i]
        blocks.append(prompt.excerpt(d, mine, len(secs[i]), matched))
        fits_[i].mode, fits_[i].passages = "passages", [s.label for s in mine]
        unit = "pages" if d.kind == "pdf" else "sections"
        how = ("the most relevant by keyword search" if matched
               else "the first ones, as no passage matched the question's words")
        warnings.append(
            f"{d.name} does not fit whole ({sizes[i]:,} tokens, {room:,} of room): sending passages only, "
            f"{len(mine)} of its {len(secs[i])} {unit}, {how}: {_labels(mine)}."
        )
    return blocks, warnings


def _labels(chosen) -> str:
    labels = [s.label for s in chosen]
    return ", ".join(labels[:8]) + (f" and {len(labels) - 8} more" if len(labels) > 8 else "") or "none"


def into_messages(session, messages: list[dict], docs, reserve: int = ANSWER_RESERVE, whole: bool = False,
                  prefill_tps: float | None = None) -> tuple[list[dict], Plan]:
    """`messages` with `docs` planned into the last user message (its text is the question), and the plan."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    question = messages[last]["content"]
    budget = Budget.from_session(session, prefill_tps)
    p = plan(docs, budget, question, len(session.encode(messages)), reserve, whole)
    out = [dict(m) for m in messages]
    out[last]["content"] = p.message
    return out, p


def kv_mode_available(shape, mode: str) -> bool:
    return mode == "fp16" or Budget(len, 0, 0, shape, 0, mode).kv_bytes(1) is not None


def measure_prefill_tps(loaded, kv_mode: str = "fp16", tokens: int = 512) -> float:
    """Prefill speed on this machine: a short warm-up, then one throwaway prefill of `tokens` tokens."""
    from app.engine.session import ChatSession, GenParams

    vocab = int(loaded.config.get("vocab_size") or loaded.config.get("text_config", {}).get("vocab_size") or 1000)
    ids = [10 + i % max(1, min(vocab, 5000) - 10) for i in range(tokens)]
    for n in (min(32, tokens), tokens):
        s = ChatSession(loaded, kv_mode=kv_mode)
        for _ in s.generate_tokens(ids[:n], GenParams(max_tokens=1, temperature=0.0)):
            pass
    return s.stats.prefill_tps
