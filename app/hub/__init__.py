"""Getting models: the curated catalog, Hub search, downloads into the HF cache, installed models, fit estimates.

Nothing here imports Qt, and nothing imports MLX at module level, so the model manager window
can use it; the fit estimate reads the engine's byte costs lazily, off the UI thread.
"""
