"""`folio bench documents`: PDF extraction speed (pages/s) and the time to ingest a long PDF.

Ingest is what happens between dropping a file and seeing its chip: extraction, counting its
tokens with the model's tokenizer, and planning the fit (the FTS5 passages index too when it
does not fit). Without --pdf a book of --pages pages is written with fpdf2 (a dev dependency).
"""

import tempfile
import time
from pathlib import Path

from app.bench.common import emit, machine, median, table


def add_arguments(p):
    p.add_argument("--pdf", default=None, help="a PDF to read (default: generate one)")
    p.add_argument("--pages", type=int, default=300, help="pages of the generated PDF")
    p.add_argument("--model", default=None, help="a model folder whose tokenizer counts tokens (and sets the context)")
    p.add_argument("--question", default="Which chapter is about lighthouse keepers?")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")


def write_book(path: Path, pages: int) -> Path:
    try:
        from fpdf import FPDF
    except ImportError:
        raise SystemExit("folio bench documents: generating a PDF needs fpdf2 (pip install -e '.[dev]'), or pass --pdf")
    text = ("The committee reviewed the figures in detail and agreed to continue the study next season "
            "with the same careful methods and a larger sample. ") * 14
    topics = ["orchards", "lighthouse keepers", "glaciers", "railways", "bees", "copper mines", "violins"]
    pdf = FPDF()
    pdf.set_font("helvetica", size=10)
    for k in range(1, pages + 1):
        pdf.add_page()
        pdf.multi_cell(0, 5, f"Chapter {k} is about {topics[k % len(topics)]}. {text}")
    pdf.output(str(path))
    return path


def run(args) -> int:
    from app import documents

    tmp = tempfile.TemporaryDirectory()
    path = Path(args.pdf) if args.pdf else write_book(Path(tmp.name) / f"book-{args.pages}.pdf", args.pages)
    budget = None
    if args.model:
        from app.engine import loader
        from app.engine.session import ChatSession

        budget = documents.Budget.from_session(ChatSession(loader.load(args.model)))

    extract, ingest, tokens, doc, plan = [], [], 0, None, None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        doc = documents.load(path)
        t1 = time.perf_counter()
        if budget:
            plan = documents.plan([doc], budget, args.question)
            tokens = plan.tokens
        extract.append(t1 - t0)
        ingest.append(time.perf_counter() - t0)
    result = {
        "pdf": path.name, "pages": doc.page_count, "bytes": doc.size_bytes, "extract_s": median(extract),
        "pages_per_s": doc.page_count / median(extract), "ingest_s": median(ingest) if budget else None,
        "tokens": tokens or None, "mode": plan.mode if plan else None, "machine": machine(),
    }
    text = table(
        ["pdf", "pages", "MB", "extract s", "pages/s", "tokens", "ingest s", "mode"],
        [[path.name, doc.page_count, doc.size_bytes / 1e6, result["extract_s"], result["pages_per_s"],
          result["tokens"], result["ingest_s"], result["mode"]]],
    )
    m = result["machine"]
    emit(args, result, text + f"\n(median of {args.repeats}; machine: {m['device']}, {m['cpus']} CPUs, {m['backend']})")
    tmp.cleanup()
    return 0
