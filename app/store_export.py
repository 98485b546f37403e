"""Conversations as files: Markdown for people, JSON for Folio (export, and import back).

The JSON is self-contained (messages, stats, attachments with their text) and versioned;
`parse` checks a file completely before the store writes anything, so a bad file changes nothing.
"""

import json
import re
import time
from dataclasses import asdict

from app.engine.errors import FolioError

FORMAT = "folio-conversation"
VERSION = 1
DEFAULT_TITLE = "New chat"
STATES = ("complete", "generating", "interrupted", "stopped", "failed")
ROLES = ("system", "user", "assistant")


class BadExport(FolioError):
    """A file given to import is not a conversation this Folio can read."""


def clean_title(title) -> str:
    return re.sub(r"\s+", " ", str(title or "")).strip()


def to_markdown(conv, messages) -> str:
    lines = [f"# {conv.title}", ""]
    meta = [f"Exported from Folio on {time.strftime('%Y-%m-%d %H:%M', time.localtime())}"]
    if conv.model_id:
        meta.append(f"model: {conv.model_id}")
    lines += ["_" + " · ".join(meta) + "_", ""]
    for m in messages:
        head = f"## {m.role.capitalize()}"
        if m.state != "complete":
            head += f" ({m.state})"
        lines += [head, ""]
        for a in m.attachments:
            lines.append(f"> Attached: {a.file_name} ({a.pages} pages, {a.token_count:,} tokens)")
        if m.attachments:
            lines.append("")
        lines += [m.content.rstrip(), ""]
        if m.state == "failed" and m.stats.get("error"):
            lines += [f"> Error: {m.stats['error']}", ""]
    return "\n".join(lines).rstrip() + "\n"


def to_json(conv, attachments, messages) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "conversation": {k: v for k, v in asdict(conv).items() if k != "id"},
        "attachments": [asdict(a) for a in attachments],
        "messages": [
            {**{k: v for k, v in asdict(m).items() if k not in ("id", "conversation_id", "attachments")},
             "attachment_ids": [a.id for a in m.attachments]}
            for m in messages
        ],
    }


def parse(data):
    """The parts of an export, checked and normalised; a clear BadExport for anything else."""
    bad = "This file is not a Folio conversation export"
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except ValueError as e:
            raise BadExport(f"{bad}: it is not valid JSON ({e}).") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BadExport(f"{bad}.")
    version = data.get("version")
    if not isinstance(version, int):
        raise BadExport(f"{bad}: it has no version.")
    if version > VERSION:
        raise BadExport(f"This file was exported by a newer Folio (export version {version}); update Folio to import it.")
    try:
        c = data["conversation"]
        conv = {
            "title": clean_title(c.get("title")) or DEFAULT_TITLE,
            "created": float(c.get("created", time.time())),
            "updated": float(c.get("updated", time.time())),
            "model_id": str(c.get("model_id") or ""),
            "settings": c.get("settings") if isinstance(c.get("settings"), dict) else {},
        }
        atts = [
            {"id": a["id"], "file_name": str(a["file_name"]), "sha256": str(a.get("sha256", "")),
             "pages": int(a.get("pages", 0)), "text": str(a.get("text", "")),
             "token_count": int(a.get("token_count", 0))}
            for a in data.get("attachments", [])
        ]
        ids = {a["id"] for a in atts}
        msgs = []
        for i, m in enumerate(data["messages"]):
            if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise BadExport(f"{bad}: message {i + 1} has no valid role or content.")
            state = m.get("state", "complete")
            if state not in STATES:
                raise BadExport(f"{bad}: message {i + 1} has an unknown state {state!r}.")
            # An answer that was streaming when exported cannot resume after import.
            state = "interrupted" if state == "generating" else state
            links = list(m.get("attachment_ids", []))
            if any(a not in ids for a in links):
                raise BadExport(f"{bad}: message {i + 1} refers to an attachment that is not in the file.")
            msgs.append({
                "role": m["role"], "content": m["content"], "state": state,
                "created": float(m.get("created", conv["created"])),
                "stats": m.get("stats") if isinstance(m.get("stats"), dict) else {},
                "prompt_tokens": int(m.get("prompt_tokens", 0)),
                "completion_tokens": int(m.get("completion_tokens", 0)),
                "attachment_ids": links,
            })
    except BadExport:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BadExport(f"{bad}: a required field is missing or malformed ({e}).") from None
    return conv, atts, msgs
