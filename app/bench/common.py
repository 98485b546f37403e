"""Shared pieces of the benchmarks: machine description, medians, table printing."""

import datetime
import json
import platform
import statistics
import sys

from app import blas


def machine() -> dict:
    import mlx.core as mx

    from app.engine import memory

    return {
        "date": datetime.date.today().isoformat(),
        "backend": memory.backend(),
        "device": mx.device_info().get("device_name", platform.processor()),
        "cpus": __import__("os").cpu_count(),
        "platform": platform.platform(),
        "blas": blas.preloaded() or "reference (netlib)" if sys.platform.startswith("linux") else "accelerate",
        "mlx": mx.__version__,
    }


def median(xs):
    return statistics.median(xs) if xs else 0.0


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(c):
    if isinstance(c, float):
        return f"{c:.4g}"
    return "-" if c is None else str(c)


def emit(args, result: dict, text: str):
    print(json.dumps(result, indent=2) if args.json else text)


def add_dtype_argument(p):
    """The --dtype option `load_model` reads."""
    p.add_argument("--dtype", default="model", choices=("model", "float32"),
                   help="float32 speeds up CPU runs, where bfloat16 matmuls are slow")


def load_model(name: str, dtype: str = "model"):
    """Load a model for a benchmark; dtype "float32" because bfloat16 matmuls are slow on CPUs."""
    import mlx.core as mx

    from app.engine import loader

    loaded = loader.load(name)
    if dtype == "float32":
        loaded.model.set_dtype(mx.float32)
    return loaded


def held_out_tokens(tokenizer, n: int) -> list[int]:
    """n tokens of real text the reference models never saw (the stdlib email package), repeated as needed."""
    import email
    from pathlib import Path

    folder = Path(email.__file__).parent
    text = "\n\n".join(f.read_text(encoding="utf-8", errors="replace") for f in sorted(folder.rglob("*.py")))
    tokens = tokenizer.encode(text, add_special_tokens=False)
    while len(tokens) < n:
        tokens = tokens + tokens
    return tokens[:n]
