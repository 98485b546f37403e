"""`folio bench generate`: Folio's decode tok/s against mlx-lm's stream_generate, same process.

Both decode the same greedy continuation of the same prompt; runs alternate so neither
side gets the warmer caches, and the median of the repeats is reported.
"""

import time

from app.bench.common import emit, machine, median, table


def add_arguments(p):
    p.add_argument("--model", required=True)
    p.add_argument("--kv", default="fp16", choices=("auto", "int4", "int8", "fp16"))
    p.add_argument("--context", type=int, default=512, help="prompt length in tokens before decoding")
    p.add_argument("--tokens", type=int, default=128, help="tokens to decode per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")


def run(args) -> int:
    import mlx.core as mx
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    from app.engine import loader
    from app.engine.session import ChatSession, GenParams

    loaded = loader.load(args.model)
    vocab = loaded.config.get("vocab_size", 1000)
    mx.random.seed(0)
    prompt = mx.random.randint(10, min(vocab, 5000), (args.context,)).tolist()
    # Force the full token budget: no EOS stop on either side.
    loaded.tokenizer.eos_token_ids = set()

    def folio_once():
        s = ChatSession(loaded, kv_mode=args.kv)
        for _ in s.generate_tokens(prompt, GenParams(max_tokens=args.tokens, temperature=0.0)):
            pass
        return s.stats.decode_tps, s.stats.generated_tokens

    def mlx_lm_once():
        tps, n = 0.0, 0
        for r in stream_generate(loaded.model, loaded.tokenizer, mx.array(prompt), max_tokens=args.tokens,
                                 sampler=make_sampler(0.0)):
            tps, n = r.generation_tps, r.generation_tokens
        return tps, n

    folio_once(), mlx_lm_once()  # warm-up: compile, allocate
    f, m = [], []
    for _ in range(args.repeats):
        f.append(folio_once()[0])
        m.append(mlx_lm_once()[0])
        time.sleep(0.05)
    result = {
        "model": loaded.model_id, "kv": args.kv, "context": args.context, "tokens": args.tokens,
        "folio_decode_tps": median(f), "mlx_lm_decode_tps": median(m),
        "ratio": median(f) / median(m) if median(m) else 0.0, "machine": machine(),
    }
    text = table(
        ["model", "kv", "context", "folio tok/s", "mlx-lm tok/s", "ratio"],
        [[loaded.model_id, args.kv, args.context, result["folio_decode_tps"], result["mlx_lm_decode_tps"], result["ratio"]]],
    )
    emit(args, result, text + f"\n(machine: {result['machine']['device']}, {result['machine']['backend']}, BLAS {result['machine']['blas']})")
    return 0
