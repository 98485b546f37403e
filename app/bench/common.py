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
