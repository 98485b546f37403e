"""Documents: PDF and text extraction, every bad file, prompt markers, fit planning, passages fallback."""

import hashlib

import pytest

from pdf_factory import book_pages, make_book, make_corrupt, make_encrypted, make_image_only, make_pdf

from app import documents
from app.documents import fit, passages, prompt
from app.engine import kvcache
from app.engine.errors import Cancelled, FolioError
from app.engine.loader import ModelShape

SHAPE = ModelShape(n_layers=2, n_kv_heads=1, head_dim=64, windows=[None, None], attention_scale=None, max_context=32768)


def words(text: str) -> int:
    return len(text.split())


def budget(context=4096, **kw) -> documents.Budget:
    kw.setdefault("available_bytes", 10**12)
    kw.setdefault("model_max_context", SHAPE.max_context)
    return documents.Budget(count=words, context_limit=context, shape=SHAPE, weights_bytes=10**6, **kw)


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """The 300-page PDF, built once."""
    return make_book(tmp_path_factory.mktemp("book") / "book.pdf", 300)


# -- extraction --------------------------------------------------------------

def test_pdf_pages_keep_their_numbers(tmp_path):
    path = make_pdf(tmp_path / "three.pdf", ["Alpha page text.", "Beta page text.", "Gamma page text."])
    doc = documents.load(path)
    assert doc.kind == "pdf" and doc.page_count == 3 and doc.describe() == "3 pages"
    assert [p.split()[0] for p in doc.pages] == ["Alpha", "Beta", "Gamma"]
    assert doc.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert doc.notices == []


def test_300_page_pdf_ingests_with_progress_and_every_page_in_place(book):
    seen = []
    doc = documents.load(book, on_progress=lambda done, total: seen.append((done, total)))
    assert doc.page_count == 300
    assert seen[-1] == (300, 300) and len(seen) == 300
    for k in (1, 150, 300):
        assert f"marker{k}." in doc.pages[k - 1]
        assert f"Chapter {k} is about" in doc.pages[k - 1]


def test_loading_can_be_cancelled(book):
    with pytest.raises(Cancelled):
        documents.load(book, should_stop=lambda: True)


def test_blank_pages_are_named_in_a_notice(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=10)
    pdf.add_page()
    pdf.cell(0, 10, "Some text.")
    pdf.add_page()
    pdf.rect(10, 10, 50, 50)
    pdf.output(str(tmp_path / "mixed.pdf"))
    doc = documents.load(tmp_path / "mixed.pdf")
    assert doc.pages[1] == ""
    assert "Page 2 of mixed.pdf" in doc.notices[0] and "OCR" in doc.notices[0]
    assert "[page 2]\n(no text on this page)" in prompt.full(doc)


def _bad_files(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "empty.pdf").write_bytes(b"")
    (tmp_path / "blank.md").write_text("  \n\n\t\n")
    (tmp_path / "report.docx").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "folder").mkdir()
    (tmp_path / "big.txt").write_text("x" * 5000)
    make_book(tmp_path / "big.pdf", 2)
    return {
        "encrypted": (make_encrypted(tmp_path / "locked.pdf"), {}, documents.EncryptedPDF, "password-protected"),
        "corrupt": (make_corrupt(tmp_path / "cut.pdf"), {}, documents.CorruptPDF, "damaged"),
        "not a pdf": ((tmp_path / "fake.pdf"), {}, documents.CorruptPDF, "not a valid PDF"),
        "image-only": (make_image_only(tmp_path / "scan.pdf"), {}, documents.ImageOnlyPDF, "does not do OCR"),
        "empty": (tmp_path / "empty.txt", {}, documents.EmptyDocument, "empty (0 bytes)"),
        "empty pdf": (tmp_path / "empty.pdf", {}, documents.EmptyDocument, "empty"),
        "whitespace": (tmp_path / "blank.md", {}, documents.EmptyDocument, "only whitespace"),
        "huge text": (tmp_path / "big.txt", {"max_text_bytes": 1000}, documents.DocumentTooLarge, "is 5.0 KB; Folio attaches text files up to 1.0 KB"),
        "huge pdf": (tmp_path / "big.pdf", {"max_pdf_bytes": 1000}, documents.DocumentTooLarge, "Folio attaches PDFs up to 1.0 KB"),
        "word": (tmp_path / "report.docx", {}, documents.UnsupportedDocument, "Word document"),
        "binary": (tmp_path / "blob.bin", {}, documents.UnsupportedDocument, "binary data"),
        "folder": (tmp_path / "folder", {}, documents.UnsupportedDocument, "is a folder"),
        "missing": (tmp_path / "nope.pdf", {}, documents.DocumentError, "No file at"),
    }


@pytest.mark.parametrize("case", [
    "encrypted", "corrupt", "not a pdf", "image-only", "empty", "empty pdf", "whitespace", "huge text", "huge pdf",
    "word", "binary", "folder", "missing",
])
def test_each_bad_file_has_its_own_one_line_message(tmp_path, case):
    (tmp_path / "fake.pdf").write_bytes(b"%PDF-1.7 this is not really a PDF")
    path, kwargs, error, text = _bad_files(tmp_path)[case]
    with pytest.raises(error) as e:
        documents.load(path, **kwargs)
    assert isinstance(e.value, FolioError)
    message = str(e.value)
    assert text in message and "\n" not in message and "Traceback" not in message


def test_text_encodings_are_detected_and_bad_bytes_replaced_with_a_notice(tmp_path):
    (tmp_path / "utf8.md").write_bytes("\ufeff# Café\nnaïve résumé 東京\n".encode("utf-8"))
    doc = documents.load(tmp_path / "utf8.md")
    assert doc.pages[0].startswith("# Café") and doc.encoding == "utf-8" and doc.notices == []

    legacy = ("Le café était très animé; les élèves déjeunaient à côté du théâtre. " * 40).encode("cp1252")
    (tmp_path / "legacy.txt").write_bytes(legacy)
    doc = documents.load(tmp_path / "legacy.txt")
    assert "café était très animé" in doc.pages[0]
    assert "not UTF-8" in doc.notices[0] and doc.encoding in doc.notices[0]

    (tmp_path / "utf16.txt").write_bytes("Grüße aus Köln\n".encode("utf-16"))
    assert documents.load(tmp_path / "utf16.txt").pages[0].strip() == "Grüße aus Köln"

    (tmp_path / "broken.py").write_bytes(b"print('ok')\n" * 50 + b"x = '\xff\xfe'\n")
    doc = documents.load(tmp_path / "broken.py")
    assert "\ufffd" in doc.pages[0] and "print('ok')" in doc.pages[0]
    assert "2 undecodable byte(s) were replaced" in doc.notices[0]


def test_stored_text_rebuilds_the_document(tmp_path):
    doc = documents.load(make_pdf(tmp_path / "a.pdf", ["one", "two", "three"]))
    again = documents.Document.from_text(doc.name, doc.to_text(), "pdf", doc.sha256)
    assert again.pages == doc.pages and prompt.full(again) == prompt.full(doc)


# -- prompt --------------------------------------------------------------------

def test_prompt_marks_document_boundaries_and_pages(tmp_path):
    pdf = documents.load(make_pdf(tmp_path / "r.pdf", ["First.", "Second."]))
    (tmp_path / "notes.md").write_text("line one\nline two\n")
    md = documents.load(tmp_path / "notes.md")
    text = prompt.compose("What is on page 2?", [prompt.full(pdf), prompt.full(md)])
    assert text.startswith(prompt.HEADER) and text.endswith("What is on page 2?")
    assert '<document name="r.pdf" pages="2">\n[page 1]\nFirst.\n\n[page 2]\nSecond.\n</document>' in text
    assert '<document name="notes.md" lines="3">\nline one\nline two\n\n</document>' in text
    assert text.index("r.pdf") < text.index("notes.md")


# -- passages ------------------------------------------------------------------

def test_text_sections_cover_every_line_once():
    lines = [f"line {i} " + "w" * 70 for i in range(1, 301)]
    doc = documents.Document("long.txt", "text", ["\n".join(lines)], "", 0)
    secs = passages.sections(doc)
    assert len(secs) > 3 and secs[0].label.startswith("lines 1-")
    joined = "\n".join(s.text for s in secs)
    assert joined.split("\n") == lines
    assert secs[-1].label.endswith("-300")


def test_bm25_ranks_the_page_with_the_question_words_first():
    doc = documents.Document("b.pdf", "pdf", book_pages(40, 60), "", 0)
    index = passages.Index(passages.sections(doc))
    ranked = index.rank("Where are the lighthouse keepers?")
    assert ranked and all("lighthouse" in s.text for s in ranked)
    assert index.rank('marker17 AND NEAR( "*') [0].label == "page 17"  # FTS5 syntax in the question is just text
    assert index.rank("what is it about?") == []


# -- planning ------------------------------------------------------------------

def test_a_document_that_fits_goes_in_whole_with_its_costs(tmp_path):
    doc = documents.load(make_pdf(tmp_path / "a.pdf", ["Apples grow here.", "Pears too."]))
    p = documents.plan([doc], budget(prefill_tps=100.0), "What grows?", used_tokens=10)
    n = words(prompt.full(doc))
    assert p.fits and p.mode == "full" and p.docs[0].mode == "full" and p.reason == ""
    assert p.docs[0].tokens == n == p.tokens
    assert p.docs[0].kv_bytes_fp16 == kvcache.fp16_bytes_for(SHAPE, n)
    assert p.docs[0].prefill_s == pytest.approx(n / 100.0) and not p.long_prefill
    assert prompt.full(doc) in p.message and p.message.endswith("What grows?")
    assert "a.pdf · 2 pages" in p.docs[0].chip() and f"{n:,} tokens" in p.docs[0].chip()
    assert p.docs[0].to_dict() == {"name": "a.pdf", "pages": 2, "tokens": n, "mode": "full"}


def test_kv_memory_in_a_mode_that_is_not_built_says_so():
    b = budget(kv_mode="int4")
    try:
        per_token = kvcache.bytes_per_token(SHAPE, "int4")
    except FolioError:
        assert b.kv_bytes(1000) is None
        assert "not available" in documents.DocFit("a", "pdf", 1, "1 page", 1000, "int4", None, 5, None).chip()
    else:
        assert b.kv_bytes(1000) == pytest.approx(per_token * 1000)
    assert b.kv_bytes(1000, "fp16") == kvcache.fp16_bytes_for(SHAPE, 1000)


def test_a_long_prefill_is_warned_about():
    doc = documents.Document("long.pdf", "pdf", ["word " * 3000], "", 0)
    p = documents.plan([doc], budget(prefill_tps=50.0), "q")
    assert p.long_prefill and p.prefill_s > documents.LONG_PREFILL_S
    assert any("Reading this will take about" in w and "50 tokens/s" in w for w in p.warnings)


def test_too_long_falls_back_to_labelled_passages_with_the_numbers(book):
    doc = documents.load(book)
    p = documents.plan([doc], budget(context=4096, model_max_context=131072), "Tell me about marker123 please",
                       used_tokens=20)
    assert not p.fits and p.mode == "passages" and p.docs[0].mode == "passages"
    assert p.docs[0].passages[0] == "page 123"
    assert f"The documents are {p.tokens:,} tokens" in p.reason and "limit 4,096" in p.reason
    assert p.larger_context >= p.tokens + 20 + documents.ANSWER_RESERVE and p.larger_context % 1024 == 0
    assert f"A context of {p.larger_context:,} tokens would hold them whole" in p.reason
    assert "EXCERPT" in p.message and "[page 123]" in p.message and "marker123." in p.message
    assert p.sent_tokens <= p.room
    assert any("passages only" in w and "page 123" in w for w in p.warnings)
    assert p.docs[0].to_dict()["mode"] == "passages"


def test_whole_refuses_with_the_numbers_instead(book):
    doc = documents.load(book)
    with pytest.raises(documents.DocumentTooLong) as e:
        documents.plan([doc], budget(context=4096), "marker5", whole=True)
    assert "tokens of context are left" in str(e.value) and "limit 4,096" in str(e.value)
    assert "The model's maximum context is 32,768 tokens" in str(e.value)


def test_memory_limits_the_plan_and_the_offer():
    doc = documents.Document("big.pdf", "pdf", ["lorem ipsum " * 500] * 10, "", 0)
    per_token = kvcache.fp16_bytes_per_token(SHAPE)
    b = budget(context=32768, available_bytes=10**6 + per_token * 2000)
    assert b.memory_tokens() == 2000
    p = documents.plan([doc], b, "lorem")
    assert not p.fits and "memory holds a KV cache of at most 2,000 tokens" in p.reason
    assert p.larger_context is None and p.room == 2000 - p.used_tokens - documents.ANSWER_RESERVE


def test_no_matching_words_sends_the_first_pages_and_says_so():
    doc = documents.Document("b.pdf", "pdf", book_pages(30, 200), "", 0)
    p = documents.plan([doc], budget(context=1500), "Summarize this.")
    assert p.docs[0].passages[0] == "page 1"
    assert "no passage matched the question's words" in p.message
    assert any("the first ones" in w for w in p.warnings)


def test_small_documents_stay_whole_beside_a_big_one_in_passages(tmp_path):
    small = documents.Document("small.md", "text", ["The lighthouse is painted red."], "", 0)
    big = documents.Document("big.pdf", "pdf", book_pages(60, 200), "", 0)
    p = documents.plan([big, small], budget(context=2500), "lighthouse keepers")
    assert [d.mode for d in p.docs] == ["passages", "full"]
    assert prompt.full(small) in p.message and p.message.index("big.pdf") < p.message.index("small.md")


def test_chips_carry_display_text_for_the_ui(book):
    small = documents.Document("small.md", "text", ["A short note about lighthouses."], "", 0)
    p = documents.plan([small], budget(prefill_tps=1000.0), "q")
    chip = p.chips()[0]
    assert chip["whole"] and chip["name"] == "small.md" and chip["warning"] == ""
    assert chip["summary"].startswith("1 line · ") and "fits (" in chip["summary"]
    assert chip["memory"] == f"KV {fit.fmt(p.docs[0].kv_bytes_fp16)} in fp16"

    p = documents.plan([documents.load(book)], budget(context=8192, prefill_tps=100.0), "lighthouse keepers")
    chip = p.chips()[0]
    assert not chip["whole"] and "does not fit" in chip["summary"] and "passages only" in chip["summary"]
    assert "Reading this will take about" in chip["warning"] and p.reason in chip["detail"]
