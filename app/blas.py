"""Finds an optimized BLAS for MLX's Linux CPU wheel, which links the slow reference BLAS.

MLX's CPU matmuls run ~50x faster with OpenBLAS preloaded (2.6 vs 140 GFLOP/s measured on
2 cores). Preloading must happen before the process starts, so the launcher re-executes
itself once with LD_PRELOAD set. `python -m app.blas` prints the library path (or nothing)
for the Makefile's test and bench commands.
"""

import os
import sys
from pathlib import Path

CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib64/libopenblas.so.0",
)
_MARK = "FOLIO_BLAS_CHECKED"


def find_openblas() -> str | None:
    if not sys.platform.startswith("linux"):
        return None
    override = os.environ.get("FOLIO_BLAS")
    if override is not None:
        return override if override and Path(override).exists() else None
    return next((p for p in CANDIDATES if Path(p).exists()), None)


def preloaded() -> str | None:
    """The optimized BLAS this process runs with, if any."""
    lib = find_openblas()
    return lib if lib and lib in os.environ.get("LD_PRELOAD", "") else None


def reexec_with_blas(argv: list[str]) -> None:
    """Restart this process with OpenBLAS preloaded; a no-op if done, absent or not Linux."""
    lib = find_openblas()
    if not lib or os.environ.get(_MARK) or lib in os.environ.get("LD_PRELOAD", ""):
        return
    env = dict(os.environ)
    env[_MARK] = "1"
    env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    os.execve(sys.executable, [sys.executable, "-m", "app", *argv], env)


if __name__ == "__main__":
    print(find_openblas() or "")
