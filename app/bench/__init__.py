"""`folio bench NAME`: each benchmark is a module here with `add_arguments` and `run`."""

import importlib

BENCHES = {
    "generate": "decode speed: Folio vs mlx-lm's stream_generate, same process",
    "quality": "KV-cache quality per mode: top-1 agreement, KL, perplexity",
    "attention": "one decode step of attention over a compressed cache",
    "decode-overhead": "decode ms/token and per-layer MLX ops of each KV cache on a deep, narrow random model",
    "reopen": "time to first token reopening a long conversation: cold vs saved cache",
    "rewind": "second turn on a wrapped sliding-window cache: rewound through the undo log vs prefilled afresh",
    "documents": "PDF extraction pages/s and the time to ingest a long PDF (extract, count, plan)",
    "ui": "window responsiveness: 16 ms timer lateness while a 2,000-token answer streams into a 200-message chat",
}


def add_arguments(p):
    sub = p.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name, help_text in BENCHES.items():
        b = sub.add_parser(name, help=help_text, description=help_text)
        module = f"app.bench.{name.replace('-', '_')}"
        b.set_defaults(_bench=module)
        try:
            importlib.import_module(module).add_arguments(b)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            b.set_defaults(_bench=None)


def run(args) -> int:
    if args._bench is None:
        print(f"folio bench {args.bench}: not available in this build")
        return 2
    return importlib.import_module(args._bench).run(args)
