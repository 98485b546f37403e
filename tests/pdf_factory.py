"""Builds PDFs for tests with fpdf2: text pages, long books, encrypted, image-only and damaged files."""

from pathlib import Path

from fpdf import FPDF

TOPICS = [
    "orchards and apple harvests", "lighthouse keepers on the coast", "glaciers and mountain ice",
    "railway timetables", "bee colonies and honey", "copper mining", "violin making", "tidal energy",
    "desert astronomy", "paper manufacture", "river ferries", "salt production",
]


def make_pdf(path, pages: list[str]) -> Path:
    """One PDF page per string (Helvetica, so Latin-1 text only)."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=10)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 5, text)
    pdf.output(str(path))
    return Path(path)


def book_pages(n: int, words_per_page: int = 250) -> list[str]:
    """`n` pages of distinct prose; page k names its topic and a code word "marker<k>" once."""
    filler = ("The committee reviewed the figures in detail and agreed to continue the study next season "
              "with the same careful methods and a larger sample. ").split()
    pages = []
    for k in range(1, n + 1):
        topic = TOPICS[k % len(TOPICS)]
        words = [f"Chapter {k} is about {topic}. The code word for this page is marker{k}."]
        words += [filler[(k + i) % len(filler)] for i in range(words_per_page)]
        pages.append(" ".join(words))
    return pages


def make_book(path, n: int, words_per_page: int = 250) -> Path:
    return make_pdf(path, book_pages(n, words_per_page))


def make_encrypted(path, user_password: str = "secret") -> Path:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    pdf.add_page()
    pdf.cell(0, 10, "Confidential numbers.")
    pdf.set_encryption(owner_password="owner", user_password=user_password)
    pdf.output(str(path))
    return Path(path)


def make_image_only(path, pages: int = 2) -> Path:
    """Pages holding only drawings and a raster image: no text layer, as a scan would have."""
    from PIL import Image

    img = Image.new("RGB", (120, 60), (200, 30, 30))
    pdf = FPDF()
    for _ in range(pages):
        pdf.add_page()
        pdf.rect(20, 20, 100, 50)
        pdf.image(img, x=30, y=90, w=120)
    pdf.output(str(path))
    return Path(path)


def make_corrupt(path) -> Path:
    """A real PDF cut off after its first few hundred bytes."""
    good = Path(path).with_suffix(".whole.pdf")
    make_pdf(good, ["This file will be cut short."])
    Path(path).write_bytes(good.read_bytes()[:300])
    good.unlink()
    return Path(path)
