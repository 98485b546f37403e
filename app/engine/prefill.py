"""Feeding a prompt through the model chunk by chunk: the app's prefill loop (ChatSession), which
the end-to-end benchmark (bench/e2e_device.py) also times for every row.

Each chunk is evaluated before the next one's graph is built. Building the next chunk while the GPU
runs the current one (mx.async_eval, one chunk in flight) was measured and not kept (docs/
benchmarks.md, eleventh session): on an H100 it hid the graph building, 0.5-1% of a 128K prefill,
and raised peak memory by 1.0-1.5 GB in most runs (Llama-3.1-8B shape, 25.8 -> 26.8-27.3 GB),
the chunk's temporaries still held when the next chunk's first buffers were taken. Folio is for
fitting long contexts in a Mac's memory, where the building is an even smaller share of a slower
GPU's chunk.
"""

from typing import Callable

import mlx.core as mx


def feed(model, cache: list, tokens: list[int], chunk: int,
         should_stop: Callable[[], bool] = lambda: False,
         on_chunk: Callable[[int], None] = lambda done: None) -> int:
    """Run `tokens` through `model` into `cache`; return how many are in the cache.

    `should_stop` is asked before each chunk; `on_chunk(done)` is called after each chunk has
    finished on the device. Errors propagate; the cache is then in an unknown state and the caller
    resets it.
    """
    done = 0
    for i in range(0, len(tokens), chunk):
        if should_stop():
            break
        piece = tokens[i : i + chunk]
        model(mx.array(piece)[None], cache=cache)
        mx.eval([c.state for c in cache])
        done += len(piece)
        on_chunk(done)
        mx.clear_cache()  # the chunk's activations, so the next chunk reuses the memory they held
    return done
