"""Markdown to the HTML subset Qt's rich text understands, with a copy link on every code block.

markdown-it-py parses (CommonMark plus tables; raw HTML in a message is shown, not run); code
blocks become one-cell tables because Qt's rich text ignores backgrounds and padding on <pre>.
"""

import html
from dataclasses import dataclass, field
from functools import lru_cache

from markdown_it import MarkdownIt

MONO = "Menlo, 'SF Mono', Monaco, 'DejaVu Sans Mono', monospace"


@dataclass(frozen=True)
class Colors:
    text: str = "#1d1d1f"
    muted: str = "#6e6e73"
    code_bg: str = "#f2f2f5"
    code_header: str = "#e6e6ea"
    link: str = "#0a66d8"


@dataclass
class Rendered:
    html: str
    code_blocks: list = field(default_factory=list)


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "breaks": True}).enable("table")


def render(text: str, colors: Colors = Colors()) -> Rendered:
    """`text` as HTML; `code_blocks[i]` is the source behind the link `copy-code:i`."""
    md = _parser()
    tokens = md.parse(text)
    blocks: list[str] = []
    parts: list[str] = []
    start = 0
    # Render the text between code blocks with markdown-it, and each code block ourselves.
    for i, tok in enumerate(tokens):
        if tok.type not in ("fence", "code_block"):
            continue
        if i > start:
            parts.append(md.renderer.render(tokens[start:i], md.options, {}))
        start = i + 1
        parts.append(_code_block(tok.content, tok.info.strip().split(" ")[0] if tok.info else "", len(blocks), colors))
        blocks.append(tok.content.rstrip("\n"))
    if start < len(tokens):
        parts.append(md.renderer.render(tokens[start:], md.options, {}))
    body = "".join(parts)
    # Qt's rich text draws tables without lines or padding unless told.
    body = body.replace(
        "<table>", f'<table border="1" cellspacing="0" cellpadding="5" style="border-color: {colors.code_header};'
        ' border-style: solid; margin-top: 6px; margin-bottom: 6px;">'
    )
    # Qt's rich text keeps inline code unstyled unless told.
    body = body.replace("<code>", f"<code style=\"font-family: {MONO}; background-color: {colors.code_bg};\">")
    return Rendered(body, blocks)


def _code_block(code: str, lang: str, index: int, colors: Colors) -> str:
    code = html.escape(code.rstrip("\n"))
    label = html.escape(lang) if lang else "code"
    return (
        f'<table width="100%" cellspacing="0" cellpadding="6" style="margin-top: 4px; margin-bottom: 8px;">'
        f'<tr><td style="background-color: {colors.code_header}; color: {colors.muted};">'
        f'<span style="font-size: small;">{label}</span></td>'
        f'<td align="right" style="background-color: {colors.code_header};">'
        f'<a href="copy-code:{index}" style="color: {colors.link}; text-decoration: none; font-size: small;">Copy</a></td></tr>'
        f'<tr><td colspan="2" style="background-color: {colors.code_bg};">'
        f'<pre style="font-family: {MONO}; margin: 0;">{code}</pre></td></tr></table>'
    )
