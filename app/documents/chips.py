"""What the composer's chips show for the files attached so far: one plain dict per path.

Runs on the engine worker thread (it tokenizes with the loaded model's tokenizer); what it
returns is display text and flags only, safe to send to the UI through a queued signal.
"""

from pathlib import Path

from app.documents.errors import DocumentError
from app.documents.extract import load
from app.documents.fit import Budget, plan


def inspect(paths, loaded, messages: list[dict], kv_mode: str = "fp16", context_limit: int | None = None,
            prefill_tps: float = 0.0, on_progress=None, should_stop=None, cache: dict | None = None) -> list[dict]:
    """Chip data for each path, in order: {"path", "error"} for a bad file, else the plan's chip dict.

    `messages` is the conversation so far (without the next question); `on_progress(path, done, pages)`
    reports reading; `cache` (path -> Document) spares re-reading files already seen.
    """
    from app.engine.session import ChatSession

    cache = {} if cache is None else cache
    docs, out = [], []
    for path in map(Path, paths):
        try:
            if path not in cache:
                progress = (lambda d, t, p=path: on_progress(p, d, t)) if on_progress else None
                cache[path] = load(path, on_progress=progress, should_stop=should_stop)
            docs.append(cache[path])
            out.append({"path": path})
        except DocumentError as e:
            out.append({"path": path, "name": path.name, "error": str(e)})
    if docs and loaded is None:  # no model yet: what the files are, not what they cost
        for item in out:
            if "error" not in item:
                doc = cache[item["path"]]
                item.update(name=doc.name, summary=f"{doc.describe()} · choose a model to see whether it fits",
                            memory="", whole=True, warning="", detail="\n".join(doc.notices))
    elif docs:
        session = ChatSession(loaded, kv_mode=kv_mode, context_limit=context_limit)
        budget = Budget.from_session(session, prefill_tps=prefill_tps)
        used = len(session.encode(messages + [{"role": "user", "content": ""}])) if messages else 0
        chips = iter(plan(docs, budget, "", used).chips())
        for item in out:
            if "error" not in item:
                item.update(next(chips))
    return out
