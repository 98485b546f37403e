"""`folio bench rewind`: a second turn on a wrapped sliding-window cache, rewound vs prefilled afresh.

Turn 1 answers a long prompt. Turn 2 keeps the conversation but drops the answer's last few
tokens (what a chat template re-rendering the answer does) and asks a question. Rewound: the
same session trims its cache through the window layers' undo log and prefills only the rest.
Fresh: a new session prefills all of turn 2. Also reported: the undo log's bytes, and turn 1's
decode speed with and without the log (REWIND = 0 writes no log).
"""

from app.bench.common import add_dtype_argument, emit, held_out_tokens, load_model, machine, median, table


def add_arguments(p):
    p.add_argument("--model", required=True)
    p.add_argument("--kv", default="int4", choices=("auto", "int4", "int8"))
    p.add_argument("--context", type=int, default=2000, help="turn 1's prompt length in tokens")
    p.add_argument("--answer", type=int, default=32, help="turn 1's answer length in tokens")
    p.add_argument("--back", type=int, default=3, help="answer tokens the re-rendered turn 2 differs in")
    p.add_argument("--repeats", type=int, default=3, help="runs of each side (median)")
    add_dtype_argument(p)
    p.add_argument("--json", action="store_true")


def run(args) -> int:
    from app.engine import kvcache
    from app.engine.errors import FolioError
    from app.engine.session import ChatSession, GenParams

    try:
        loaded = load_model(args.model, args.dtype)
        tok = loaded.tokenizer
        history = held_out_tokens(tok, args.context)
        question = tok.encode("\n\n# Question: what does this module do?\n", add_special_tokens=False)
        windows = [w for w in loaded.shape.windows if w]
        if not windows or args.context <= max(windows):
            raise FolioError("This benchmark needs a sliding-window model and a --context longer than its window.")

        def session():
            s = ChatSession(loaded, kv_mode=args.kv)
            s.context_limit = max(s.context_limit, args.context + args.answer + len(question) + 8)
            return s

        def turn1(rewind: int):
            saved, kvcache.REWIND = kvcache.REWIND, rewind
            try:
                s = session()
                for _ in s.generate_tokens(history, GenParams(max_tokens=args.answer, temperature=0.0, seed=0)):
                    pass
            finally:
                kvcache.REWIND = saved
            return s

        one = GenParams(max_tokens=1, temperature=0.0)
        for _ in session().generate_tokens(history[:64], one):  # warm-up: compile, allocate
            pass
        rewound, fresh, cached, decode_log, decode_none, log_bytes, kv_bytes = [], [], 0, [], [], 0, 0
        for _ in range(max(1, args.repeats)):
            decode_none.append(turn1(0).stats.decode_tps)
            s = turn1(kvcache.REWIND)
            decode_log.append(s.stats.decode_tps)
            log_bytes = sum(a.nbytes for c in s.cache if isinstance(c, kvcache.QuantizedCache)
                            and c.undo_k is not None for a in (*c.undo_k, *c.undo_v))
            kv_bytes = kvcache.cache_bytes(s.cache)
            second = s.cache_tokens[: len(s.cache_tokens) - args.back] + question
            for _ in s.generate_tokens(second, one):
                pass
            rewound.append(s.stats.ttft_s)
            cached = s.stats.cached_tokens
            f = session()
            for _ in f.generate_tokens(second, one):
                pass
            fresh.append(f.stats.ttft_s)
        if cached == 0:
            raise FolioError("Turn 2 did not reuse the cache; see the log.")
    except FolioError as e:
        print(f"folio bench rewind: {e}")
        return 1

    result = {
        "model": loaded.model_id, "kv": args.kv, "dtype": args.dtype, "context": len(second), "back": args.back,
        "rewound_ttft_s": median(rewound), "fresh_ttft_s": median(fresh), "speedup": median(fresh) / median(rewound),
        "cached_tokens": cached, "rewind_tokens": kvcache.REWIND, "undo_log_bytes": log_bytes,
        "kv_bytes_with_log": kv_bytes, "decode_tps_with_log": median(decode_log),
        "decode_tps_without_log": median(decode_none), "repeats": len(rewound), "machine": machine(),
    }
    text = table(
        ["model", "kv", "turn 2 tokens", "cached", "rewound TTFT s", "fresh TTFT s", "speedup",
         "log KB", "KV KB", "decode tok/s log / none"],
        [[loaded.model_id, args.kv, len(second), cached, result["rewound_ttft_s"], result["fresh_ttft_s"],
          result["speedup"], log_bytes / 1e3, kv_bytes / 1e3,
          f"{result['decode_tps_with_log']:.1f} / {result['decode_tps_without_log']:.1f}"]],
    )
    m = result["machine"]
    emit(args, result, text + f"\n(machine: {m['device']}, {m['backend']}, BLAS {m['blas']}; median of {len(rewound)})")
    return 0
