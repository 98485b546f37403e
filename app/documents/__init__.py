"""Documents in the chat: read PDFs and text files, plan how they fit, build the message.

The API the UI and `folio ask` use (no Qt, no MLX arrays; call on the worker thread):
    doc = documents.load(path, on_progress=None, should_stop=None)     -> Document (or a DocumentError)
    budget = documents.Budget.from_session(session, prefill_tps=None)
    p = documents.plan([doc, ...], budget, question, used_tokens, whole=False)  -> Plan
    p.docs[i].chip(), p.fits, p.reason, p.warnings, p.message (the text to send)
    documents.inspect(paths, loaded, messages, ...)  -> one chip dict per path (the composer's chips)
    messages, p = documents.into_messages(session, messages, docs)  -> the turn to generate, documents in
See docs/documents.md.
"""

from app.documents.errors import (
    CorruptPDF, DocumentError, DocumentTooLarge, DocumentTooLong, EmptyDocument, EncryptedPDF, ImageOnlyPDF,
    UnsupportedDocument,
)
from app.documents.chips import inspect
from app.documents.extract import Document, load
from app.documents.fit import (
    ANSWER_RESERVE, LONG_PREFILL_S, Budget, DocFit, Plan, into_messages, kv_mode_available, measure_prefill_tps, plan,
)

__all__ = [
    "ANSWER_RESERVE", "LONG_PREFILL_S", "Budget", "CorruptPDF", "DocFit", "Document", "DocumentError",
    "DocumentTooLarge", "DocumentTooLong", "EmptyDocument", "EncryptedPDF", "ImageOnlyPDF", "Plan",
    "UnsupportedDocument", "inspect", "into_messages", "kv_mode_available", "load", "measure_prefill_tps", "plan",
]
