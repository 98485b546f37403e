"""`folio bench reopen`: time to first token reopening a long conversation, cold prefill vs saved cache.

Both sides run in the same process on the same model. Cold: a new session prefills the
whole conversation. Saved: a new session reads the conversation's cache back from disk
(app.saved_caches) and then prefills only the follow-up question. The saved side's time
includes the disk read; on Linux the file is dropped from the page cache first, so that
read really reaches the disk.
"""

import os
import tempfile
import time
from pathlib import Path

from app.bench.common import add_dtype_argument, emit, held_out_tokens, load_model, machine, median, table


def add_arguments(p):
    p.add_argument("--model", required=True)
    p.add_argument("--kv", default="int4", choices=("auto", "int4", "int8", "fp16"))
    p.add_argument("--context", type=int, default=16384, help="conversation length in tokens")
    p.add_argument("--repeats", type=int, default=3, help="saved-cache reopens (median); the cold prefill runs once")
    add_dtype_argument(p)
    p.add_argument("--json", action="store_true")


def run(args) -> int:
    from app.engine.errors import FolioError
    from app.engine.session import ChatSession, GenParams
    from app.saved_caches import SavedCaches

    try:
        loaded = load_model(args.model, args.dtype)
        tok = loaded.tokenizer
        history = held_out_tokens(tok, args.context)
        question = tok.encode("\n\n# Question: what does this module do, in one sentence?\n", add_special_tokens=False)
        greedy = GenParams(max_tokens=1, temperature=0.0)

        def session():
            s = ChatSession(loaded, kv_mode=args.kv)
            # Timing, not quality: let a small model run past its trained context if asked to.
            s.context_limit = max(s.context_limit, args.context + len(question) + 8)
            return s

        for _ in session().generate_tokens(history[:64], greedy):  # warm-up: compile, allocate
            pass

        cold = session()
        for _ in cold.generate_tokens(history, greedy):
            pass
        cold_ttft = cold.stats.ttft_s

        with tempfile.TemporaryDirectory(dir=_cache_parent(), prefix="bench-reopen-") as folder:
            saved = SavedCaches(folder=folder, limit_gb=10_000)
            t = time.perf_counter()
            if not saved.save_session(cold, 1):
                raise FolioError("The cache could not be saved for the benchmark.")
            save_s = time.perf_counter() - t
            cache_bytes = saved.total_bytes()
            # Reopened: the conversation so far (history and the answer's first token), then a new question.
            reopened_prompt = list(cold.cache_tokens) + question
            times, restores, prefilled, dropped = [], [], [], False
            for _ in range(max(1, args.repeats)):
                dropped = _drop_page_cache(Path(folder)) or dropped
                s = session()
                t0 = time.perf_counter()
                n = saved.restore(s, 1)
                t_restore = time.perf_counter() - t0
                if n == 0:
                    raise FolioError("The saved cache was not usable; see the log.")
                for _ in s.generate_tokens(reopened_prompt, greedy):
                    pass
                times.append(t_restore + s.stats.ttft_s)
                restores.append(t_restore)
                prefilled.append(len(reopened_prompt) - s.stats.cached_tokens)
    except FolioError as e:
        print(f"folio bench reopen: {e}")
        return 1

    result = {
        "model": loaded.model_id, "kv": args.kv, "dtype": args.dtype, "context": len(history),
        "cold_ttft_s": cold_ttft, "saved_ttft_s": median(times), "speedup": cold_ttft / median(times),
        "saved_read_s": median(restores), "save_s": save_s, "saved_cache_bytes": cache_bytes,
        "cold_prefilled_tokens": len(history), "saved_prefilled_tokens": int(median(prefilled)),
        "page_cache_dropped": dropped, "repeats": len(times), "machine": machine(),
    }
    text = table(
        ["model", "kv", "context", "cold TTFT s", "saved TTFT s", "speedup", "read s", "cache MB"],
        [[loaded.model_id, args.kv, len(history), cold_ttft, result["saved_ttft_s"], result["speedup"],
          result["saved_read_s"], cache_bytes / 1e6]],
    )
    m = result["machine"]
    emit(args, result, text + f"\n(machine: {m['device']}, {m['backend']}, BLAS {m['blas']}; "
                              f"page cache dropped before reads: {dropped})")
    return 0


def _cache_parent() -> Path:
    from app import paths

    return paths.kv_cache_dir()


def _drop_page_cache(folder: Path) -> bool:
    """Ask the OS to forget the saved files' pages, so the next read comes from the disk (Linux only)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for f in folder.iterdir():
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return True
