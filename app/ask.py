"""`folio ask`: one question to a model; the answer streams to stdout, stats to stderr."""

import json
import signal
import sys

from app import log
from app.engine.errors import FolioError

logger = log.get("ask")


def add_arguments(p):
    p.add_argument("prompt", help="the question")
    p.add_argument("--model", required=True, help="a model folder or a Hugging Face repo id in the HF cache")
    p.add_argument("--kv", default="fp16", choices=("auto", "int4", "int8", "fp16"), help="KV cache precision")
    p.add_argument("--context", type=int, default=None, help="context limit in tokens (default: the model's)")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.7, help="0 is greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object with text and stats")


def build_messages(args, user_text: str) -> list[dict]:
    messages = [{"role": "system", "content": args.system}] if args.system else []
    return messages + [{"role": "user", "content": user_text}]


def run(args) -> int:
    from app.engine import loader
    from app.engine.session import ChatSession, GenParams

    stopping = {"flag": False}

    def on_sigint(*_):
        if stopping["flag"]:
            raise KeyboardInterrupt
        stopping["flag"] = True  # first Ctrl-C ends the answer cleanly; a second one aborts

    try:
        loaded = loader.load(args.model)
        session = ChatSession(loaded, kv_mode=args.kv, context_limit=args.context)
        params = GenParams(
            max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
            min_p=args.min_p, repetition_penalty=args.repetition_penalty, seed=args.seed, stop=args.stop,
        )
        prompt = args.prompt
        messages = build_messages(args, prompt)
        old = signal.signal(signal.SIGINT, on_sigint)
        pieces = []
        try:
            for piece in session.generate(messages, params, should_stop=lambda: stopping["flag"]):
                pieces.append(piece)
                if not args.json:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
        finally:
            signal.signal(signal.SIGINT, old)
    except FolioError as e:
        logger.warning("ask failed: %s", e)
        print(f"folio: {e}", file=sys.stderr)
        return 1
    stats = session.stats.to_dict()
    if args.json:
        print(json.dumps({"text": "".join(pieces), "model": loaded.model_id, **stats}))
    else:
        print()
        print(format_stats(stats), file=sys.stderr)
    return 0


def format_stats(s: dict) -> str:
    from app.engine.memory import fmt

    return (
        f"[{s['prompt_tokens']} prompt tokens ({s['cached_tokens']} cached), {s['generated_tokens']} generated | "
        f"TTFT {s['ttft_s']:.2f}s | prefill {s['prefill_tps']:.1f} tok/s | decode {s['decode_tps']:.1f} tok/s | "
        f"KV {fmt(s['kv_bytes'])} ({s['kv_policy']}, fp16 would be {fmt(s['kv_bytes_fp16'])}) | "
        f"context {s['context_used']}/{s['context_limit']} | peak {fmt(s['peak_memory_bytes'])} | "
        f"RSS {fmt(s['rss_bytes'])} | {s['backend']} | {s['finish_reason']}]"
    )
