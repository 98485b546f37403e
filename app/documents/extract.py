"""Reads an attached file into a Document: PDF page by page through pypdfium2, text with its encoding.

Page numbers are kept (page n is `pages[n - 1]`) so the prompt can mark them and the model can
cite them. Every way a file can be unusable raises its own DocumentError with a one-line message.
"""

import codecs
import hashlib
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from app.documents.errors import (
    CorruptPDF, DocumentError, DocumentTooLarge, EmptyDocument, EncryptedPDF, ImageOnlyPDF,
    UnsupportedDocument,
)
from app.engine.errors import Cancelled

MAX_PDF_BYTES = 500 * 10**6
MAX_TEXT_BYTES = 50 * 10**6

TEXT_SUFFIXES = {
    ".txt", ".text", ".md", ".markdown", ".rst", ".org", ".adoc", ".tex", ".csv", ".tsv", ".log",
    ".json", ".jsonl", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".env", ".xml", ".html",
    ".htm", ".css", ".scss", ".svg", ".ipynb",
    ".py", ".pyi", ".js", ".mjs", ".ts", ".tsx", ".jsx", ".java", ".kt", ".kts", ".scala", ".c",
    ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".m", ".mm", ".cs", ".go", ".rs", ".rb", ".php",
    ".swift", ".sh", ".bash", ".zsh", ".fish", ".ps1", ".sql", ".r", ".jl", ".lua", ".pl", ".pm",
    ".hs", ".ml", ".ex", ".exs", ".erl", ".clj", ".dart", ".vue", ".svelte", ".zig", ".nim",
    ".metal", ".cu", ".cuh", ".proto", ".gradle", ".cmake", ".mk", ".dockerfile", ".patch", ".diff",
}
# Types people drag in that Folio cannot read: named so the message says what the file is.
KNOWN_BINARY = {
    ".doc": "Word document", ".docx": "Word document", ".odt": "OpenDocument text", ".rtf": "RTF document",
    ".pages": "Pages document", ".xls": "Excel workbook", ".xlsx": "Excel workbook", ".numbers": "Numbers file",
    ".ppt": "PowerPoint file", ".pptx": "PowerPoint file", ".key": "Keynote file", ".epub": "EPUB book",
    ".png": "image", ".jpg": "image", ".jpeg": "image", ".gif": "image", ".heic": "image", ".tiff": "image",
    ".webp": "image", ".zip": "archive", ".gz": "archive", ".tar": "archive", ".7z": "archive",
    ".mp3": "audio file", ".wav": "audio file", ".m4a": "audio file", ".mp4": "video", ".mov": "video",
    ".dmg": "disk image", ".exe": "program", ".app": "application", ".safetensors": "model weights file",
}
SUPPORTED = "Folio reads PDF, plain text, Markdown and source code files"
# Control characters PDFs carry (soft hyphens as \x02, form feeds, NULs) that only confuse a model.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffe\uffff]")
# pdfium is not thread-safe; documents may be read from more than one thread (worker, tests).
_PDFIUM_LOCK = threading.Lock()


@dataclass
class Document:
    name: str
    kind: str  # "pdf" | "text"
    pages: list[str]  # PDF: page n is pages[n - 1]; text: one element, the whole file
    sha256: str
    size_bytes: int
    encoding: str = ""
    notices: list[str] = field(default_factory=list)  # what the user should know: replaced bytes, blank pages
    path: Path | None = None
    token_cache: dict = field(default_factory=dict, repr=False, compare=False)  # per tokenizer, see plan

    @property
    def page_count(self) -> int:
        return len(self.pages)

    @property
    def line_count(self) -> int:
        return self.pages[0].count("\n") + 1 if self.kind == "text" else 0

    def describe(self) -> str:
        if self.kind == "pdf":
            return f"{self.page_count:,} page" + ("s" if self.page_count != 1 else "")
        return f"{self.line_count:,} line" + ("s" if self.line_count != 1 else "")

    def to_text(self) -> str:
        """The text to store with the conversation; pages separated by form feeds, as pdftotext does."""
        return "\f".join(self.pages)

    @classmethod
    def from_text(cls, name: str, text: str, kind: str = "pdf", sha256: str = "") -> "Document":
        """Rebuild a stored attachment (see `to_text`) without the original file."""
        pages = text.split("\f") if kind == "pdf" else [text]
        return cls(name, kind, pages, sha256, len(text.encode("utf-8")))


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 10**6 else f"{n / 1e3:.1f} KB" if n >= 1000 else f"{n} bytes"


def load(path, on_progress: Callable[[int, int], None] | None = None,
         should_stop: Callable[[], bool] | None = None, max_pdf_bytes: int = MAX_PDF_BYTES,
         max_text_bytes: int = MAX_TEXT_BYTES) -> Document:
    """Read `path` into a Document. PDFs report (pages done, pages) to `on_progress`."""
    path = Path(path).expanduser()
    name = path.name
    if not path.exists():
        raise DocumentError(f"No file at {path}.")
    if path.is_dir():
        raise UnsupportedDocument(f"{name} is a folder; attach the files in it one by one.")
    try:
        with path.open("rb") as f:
            head = f.read(8192)
        size = path.stat().st_size
    except OSError as e:
        raise DocumentError(f"Cannot read {name}: {e.strerror or e}.") from None
    suffix = path.suffix.lower()
    if size == 0:
        raise EmptyDocument(f"{name} is empty (0 bytes).")
    if suffix == ".pdf" or head.startswith(b"%PDF-"):
        if size > max_pdf_bytes:
            raise DocumentTooLarge(f"{name} is {_size(size)}; Folio attaches PDFs up to {_size(max_pdf_bytes)}.")
        return _load_pdf(path, size, on_progress, should_stop)
    if suffix in KNOWN_BINARY:
        raise UnsupportedDocument(f"{name} is a {KNOWN_BINARY[suffix]} ({suffix}), which Folio cannot read; {SUPPORTED}.")
    if b"\x00" in head and not head.startswith(tuple(bom for bom, _ in _BOMS)):
        raise UnsupportedDocument(f"{name} is not a PDF or a text file (it holds binary data); {SUPPORTED}.")
    if size > max_text_bytes:
        raise DocumentTooLarge(f"{name} is {_size(size)}; Folio attaches text files up to {_size(max_text_bytes)}.")
    return _load_text(path, size)


def _load_pdf(path: Path, size: int, on_progress, should_stop) -> Document:
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    name = path.name
    data = path.read_bytes()
    with _PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as e:
            code = getattr(e, "err_code", None)
            if code == pdfium_c.FPDF_ERR_PASSWORD:
                raise EncryptedPDF(
                    f"{name} is password-protected; Folio cannot open encrypted PDFs. Save an unprotected copy and attach that."
                ) from None
            if code == pdfium_c.FPDF_ERR_SECURITY:
                raise EncryptedPDF(f"{name} uses a PDF security handler Folio cannot open.") from None
            raise CorruptPDF(f"{name} is damaged or not a valid PDF ({_reason(e)}).") from None
        try:
            pages = _pdf_pages(pdf, name, on_progress, should_stop)
        finally:
            pdf.close()
    if not pages:
        raise EmptyDocument(f"{name} has no pages.")
    blank = [i + 1 for i, t in enumerate(pages) if not t]
    if len(blank) == len(pages):
        raise ImageOnlyPDF(
            f"{name} has no text layer (scanned or image-only pages); Folio does not do OCR. "
            "Run it through an OCR tool first, then attach the result."
        )
    notices = []
    if blank:
        notices.append(f"{_page_list(blank)} of {name} have no text (images only; Folio does not do OCR).")
    return Document(name, "pdf", pages, hashlib.sha256(data).hexdigest(), size, notices=notices, path=path)


def _pdf_pages(pdf, name, on_progress, should_stop) -> list[str]:
    import pypdfium2 as pdfium

    total = len(pdf)
    pages = []
    for i in range(total):
        if should_stop and should_stop():
            raise Cancelled()
        try:
            page = pdf[i]
            textpage = page.get_textpage()
            text = textpage.get_text_bounded()
            textpage.close()
            page.close()
        except pdfium.PdfiumError as e:
            raise CorruptPDF(f"{name} is damaged: page {i + 1} cannot be read ({_reason(e)}).") from None
        pages.append(_clean(text))
        if on_progress:
            on_progress(i + 1, total)
    return pages


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text).strip()


def _reason(e) -> str:
    m = re.search(r"\(PDFium: ([^)]*)\)", str(e))
    return m.group(1) if m else str(e)


def _page_list(pages: list[int]) -> str:
    shown = ", ".join(map(str, pages[:10])) + (f" and {len(pages) - 10} more" if len(pages) > 10 else "")
    return ("Page " if len(pages) == 1 else "Pages ") + shown


def _load_text(path: Path, size: int) -> Document:
    name = path.name
    data = path.read_bytes()
    text, encoding, notices = decode(data, name)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise EmptyDocument(f"{name} holds only whitespace; there is no text to attach.")
    return Document(name, "text", [text], hashlib.sha256(data).hexdigest(), size, encoding, notices, path)


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode(data: bytes, name: str = "the file") -> tuple[str, str, list[str]]:
    """Text, the encoding used, and notices. UTF-8 first; a few bad bytes are replaced, not guessed around."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            text = data.decode(codec, errors="replace")
            bad = text.count("\ufffd")
            return text, codec, [f"{name}: {bad:,} undecodable byte(s) were replaced with \ufffd."] if bad else []
    try:
        return data.decode("utf-8-sig"), "utf-8", []
    except UnicodeDecodeError:
        pass
    lossy = data.decode("utf-8", errors="replace")
    bad = lossy.count("\ufffd")
    # Mostly-UTF-8 with a few broken bytes is far more common than a legacy encoding that happens
    # to look like it; guessing would garble the whole file to save a handful of characters.
    if bad > max(8, len(data) // 1000):
        from charset_normalizer import from_bytes

        matches = from_bytes(data)
        best = matches.best()
        # Sibling Latin code pages score alike on short text; unlabelled Western text is windows-1252
        # far more often than any of them (it is the WHATWG default), so it wins a near tie.
        near = [m for m in matches if best and m.encoding == "cp1252" and m.percent_chaos <= best.percent_chaos + 5]
        best = near[0] if near else best
        if best is not None:
            return str(best), best.encoding, [f"{name} is not UTF-8; read it as {best.encoding}."]
    return lossy, "utf-8", [f"{name}: {bad:,} undecodable byte(s) were replaced with \ufffd."]
