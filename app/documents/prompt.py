"""The text a document becomes in the user's message: boundaries, names and page markers.

Each document sits between <document ...> tags and each PDF page starts with "[page N]", so
the model can tell documents apart and cite pages; an excerpt says plainly that it is one.
"""

HEADER = (
    "Attached documents follow, each between <document> tags. \"[page N]\" marks where page N "
    "begins; cite pages as (name, p. N) when you use them."
)


def _attr(name: str) -> str:
    return name.replace('"', "'").replace("\n", " ")


def full(doc) -> str:
    if doc.kind == "pdf":
        body = "\n\n".join(f"[page {i}]\n{t or '(no text on this page)'}" for i, t in enumerate(doc.pages, 1))
        return f'<document name="{_attr(doc.name)}" pages="{doc.page_count}">\n{body}\n</document>'
    return f'<document name="{_attr(doc.name)}" lines="{doc.line_count}">\n{doc.pages[0]}\n</document>'


def section(s) -> str:
    return f"[{s.label}]\n{s.text}"


def excerpt(doc, chosen, total_sections: int, matched: bool = True) -> str:
    unit = "pages" if doc.kind == "pdf" else "sections"
    if not chosen:
        note = f"No passage of {doc.name} matched the question; none of it is included."
    elif matched:
        note = (f"EXCERPT: only the {len(chosen)} of {total_sections} {unit} of {doc.name} most relevant "
                "to the question (keyword search) are included; the rest was left out.")
    else:
        note = (f"EXCERPT: only the first {len(chosen)} of {total_sections} {unit} of {doc.name} are included "
                "(no passage matched the question's words); the rest was left out.")
    body = "\n\n".join([note] + [section(s) for s in chosen])
    size = f'pages="{doc.page_count}"' if doc.kind == "pdf" else f'lines="{doc.line_count}"'
    return f'<document name="{_attr(doc.name)}" {size} excerpt="passages">\n{body}\n</document>'


def compose(question: str, blocks: list[str]) -> str:
    if not blocks:
        return question
    return "\n\n".join([HEADER, *blocks, question])
