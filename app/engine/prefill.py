"""Feeding a prompt through the model chunk by chunk, with the next chunk's graph built while
the GPU runs the current one.

Building a chunk's graph is host work (every layer's ops, the cache's updates): in a loop that
evaluates each chunk before building the next, the GPU waits for it every chunk. Here one chunk
is in flight while the next is built; never more, so peak memory is the plain loop's (a chunk's
buffers are allocated when it is dispatched, after the one before has finished).
"""

from typing import Callable

import mlx.core as mx


def feed(model, cache: list, tokens: list[int], chunk: int,
         should_stop: Callable[[], bool] = lambda: False,
         on_chunk: Callable[[int], None] = lambda done: None) -> int:
    """Run `tokens` through `model` into `cache`; return how many are in the cache.

    `on_chunk(done)` is called after each chunk has finished on the device. `should_stop` is asked
    before each chunk is built: once it says yes the chunk already running finishes (its tokens
    are in the cache and counted) and nothing more is fed. Errors from building or dispatching
    propagate; the cache is then in an unknown state and the caller resets it.
    """
    done, pending, pending_n = 0, None, 0

    def finish():
        nonlocal done, pending
        mx.eval(pending)
        done, pending = done + pending_n, None
        on_chunk(done)
        mx.clear_cache()  # the chunk's activations, so the next one reuses the memory they held

    for i in range(0, len(tokens), chunk):
        if should_stop():
            break
        piece = tokens[i : i + chunk]
        model(mx.array(piece)[None], cache=cache)
        state = [c.state for c in cache]
        if pending is not None:
            finish()
        mx.async_eval(state)
        pending, pending_n = state, len(piece)
    if pending is not None:
        finish()
    return done
