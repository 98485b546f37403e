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
    p.add_argument("--attach", action="append", default=[], metavar="FILE",
                   help="a PDF, text, Markdown or source file to put before the question (repeatable)")
    p.add_argument("--whole", action="store_true",
                   help="with --attach: refuse, with the numbers, when a document does not fit whole "
                        "(default: send its most relevant passages instead)")


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
        docs = load_documents(args.attach)  # before the model: a bad file fails in a moment
        loaded = loader.load(args.model)
        session = ChatSession(loaded, kv_mode=args.kv, context_limit=args.context)
        params = GenParams(
            max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
            min_p=args.min_p, repetition_penalty=args.repetition_penalty, seed=args.seed, stop=args.stop,
        )
        prompt = args.prompt
        plan = attach(args, session, docs) if docs else None
        if plan:
            prompt = plan.message
        messages = build_messages(args, prompt)
        old = signal.signal(signal.SIGINT, on_sigint)
        pieces = []
        progress = _progress if plan and not args.json and sys.stderr.isatty() else None
        try:
            for piece in session.generate(messages, params, on_progress=progress,
                                          should_stop=lambda: stopping["flag"]):
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
        documents = [d.to_dict() for d in plan.docs] if plan else []
        print(json.dumps({"text": "".join(pieces), "model": loaded.model_id, **stats, "documents": documents}))
    else:
        print()
        print(format_stats(stats), file=sys.stderr)
    return 0


def load_documents(paths) -> list:
    if not paths:
        return []
    from app import documents

    return [documents.load(p) for p in paths]


def attach(args, session, docs):
    """Plan the documents into the question; each one's pages and tokens go to stderr first."""
    from app import documents

    messages = build_messages(args, args.prompt)
    _, plan = documents.into_messages(session, messages, docs, args.max_tokens, args.whole)
    if plan.sent_tokens > 8192:  # worth a second to know whether the wait will be long
        tps = documents.measure_prefill_tps(session.loaded, session.kv_mode)
        _, plan = documents.into_messages(session, messages, docs, args.max_tokens, args.whole, tps)
    for d in plan.docs:
        how = "whole" if d.mode == "full" else f"passages only: {len(d.passages)}"
        print(f"{d.name}: {d.size}, {d.tokens:,} tokens ({how})", file=sys.stderr)
    if not plan.fits:
        hint = f" Run with --context {plan.larger_context}." if plan.larger_context else ""
        print(f"folio: {plan.reason}{hint} Falling back to passages (--whole refuses instead).", file=sys.stderr)
    for w in plan.warnings:
        print(f"folio: {w}", file=sys.stderr)
    return plan


def _progress(done: int, total: int):
    end = "\n" if done >= total - 1 else ""
    print(f"\rreading: {done:,}/{total:,} tokens ({100 * done // max(total, 1)}%)", end=end, file=sys.stderr, flush=True)


def format_stats(s: dict) -> str:
    from app.units import fmt

    return (
        f"[{s['prompt_tokens']} prompt tokens ({s['cached_tokens']} cached), {s['generated_tokens']} generated | "
        f"TTFT {s['ttft_s']:.2f}s | prefill {s['prefill_tps']:.1f} tok/s | decode {s['decode_tps']:.1f} tok/s | "
        f"KV {fmt(s['kv_bytes'])} allocated, {s['kv_policy'].split(' (')[0]} {s['kv_bits_per_element']:.1f} bit/el = "
        f"{s['kv_compression']:.1f}x smaller than fp16 per token (fp16 for these tokens: {fmt(s['kv_bytes_fp16'])}) | "
        f"context {s['context_used']}/{s['context_limit']} | peak {fmt(s['peak_memory_bytes'])} | "
        f"RSS {fmt(s['rss_bytes'])} | {s['backend']} | {s['finish_reason']}]"
    )
