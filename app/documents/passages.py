"""Page-sized sections of documents and the passages fallback: SQLite FTS5 BM25 over them.

When a document does not fit the context, the sections that best match the question are
sent instead, in document order. No embedding model: BM25 with Porter stemming finds the
pages that share the question's words, which is what page citations need.
"""

import re
import sqlite3
from dataclasses import dataclass

# Text files have no pages; sections of about a page of text, cut at line ends.
SECTION_CHARS = 3000
_WORD = re.compile(r"\w+", re.UNICODE)
# Words that match nearly every page; BM25 would weigh them low anyway, but they dilute OR queries.
_STOP = set(
    "a an and are as at be been but by can could do does did for from had has have how i if in into is it "
    "its me my no not of on or our please say so such tell than that the their them then there these they "
    "this those to us was we were what when where which while who whom why will with would you your "
    "about above after again all also any because before between both each few more most other over own "
    "same she he some very just should now document documents page pages file text".split()
)


@dataclass
class Section:
    doc: int  # index of the document in the list given
    index: int  # position in that document
    label: str  # "page 12" or "lines 120-181": what the prompt shows and the model cites
    text: str


def sections(doc, doc_index: int = 0) -> list[Section]:
    if doc.kind == "pdf":
        return [Section(doc_index, i, f"page {i + 1}", t) for i, t in enumerate(doc.pages) if t]
    out, lines, start, size = [], [], 1, 0
    for n, line in enumerate(doc.pages[0].split("\n"), 1):
        lines.append(line)
        size += len(line) + 1
        if size >= SECTION_CHARS:
            out.append(Section(doc_index, len(out), f"lines {start}-{n}", "\n".join(lines)))
            lines, start, size = [], n + 1, 0
    if any(l.strip() for l in lines):
        out.append(Section(doc_index, len(out), f"lines {start}-{start + len(lines) - 1}", "\n".join(lines)))
    return out


def query_terms(question: str) -> list[str]:
    seen = []
    for w in _WORD.findall(question.lower()):
        if len(w) > 1 and w not in _STOP and w not in seen:
            seen.append(w)
    return seen


class Index:
    """An in-memory FTS5 index of sections; `rank(question)` returns them best first."""

    def __init__(self, all_sections: list[Section]):
        self.sections = all_sections
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE VIRTUAL TABLE s USING fts5(body, tokenize='porter unicode61 remove_diacritics 2')")
        self.db.executemany("INSERT INTO s(rowid, body) VALUES (?, ?)", ((i, s.text) for i, s in enumerate(all_sections)))

    def rank(self, question: str, limit: int = 1000) -> list[Section]:
        terms = query_terms(question)
        if not terms:
            return []
        # Each term quoted, so FTS5 query syntax in the user's words (AND, NEAR, *, ") is plain text.
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        rows = self.db.execute("SELECT rowid FROM s WHERE s MATCH ? ORDER BY bm25(s) LIMIT ?", (match, limit))
        return [self.sections[r[0]] for r in rows]

    def close(self):
        self.db.close()


def select(ranked: list[Section], cost, budget: int) -> list[Section]:
    """Best-ranked sections whose token `cost(section)` adds up to at most `budget`, in document order."""
    chosen, used = [], 0
    for s in ranked:
        c = cost(s)
        if used + c <= budget:
            chosen.append(s)
            used += c
    return sorted(chosen, key=lambda s: (s.doc, s.index))
