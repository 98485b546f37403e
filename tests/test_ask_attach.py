"""`folio ask --attach`: documents before the answer, whole when they fit, passages otherwise, bad files refused."""

import json
import subprocess
import sys

import pytest

from pdf_factory import make_book, make_encrypted, make_pdf

from app.cli import main


def ask(model, *args):
    return main(["ask", "--model", str(model), "--temperature", "0", "--max-tokens", "4", *args])


def test_attached_documents_go_in_whole_and_are_reported(model_dir, tmp_path, capsys):
    pdf = make_pdf(tmp_path / "notes.pdf", ["The orchard has apple trees.", "The harvest is in October."])
    (tmp_path / "tool.py").write_text("def harvest():\n    return 'apples'\n")
    rc = ask(model_dir("llama"), "--attach", str(pdf), "--attach", str(tmp_path / "tool.py"), "--json", "When is the harvest?")
    captured = capsys.readouterr()
    assert rc == 0
    out = json.loads(captured.out)
    docs = out["documents"]
    assert [(d["name"], d["pages"], d["mode"]) for d in docs] == [("notes.pdf", 2, "full"), ("tool.py", 1, "full")]
    assert all(d["tokens"] > 0 for d in docs)
    assert out["prompt_tokens"] > sum(d["tokens"] for d in docs)
    assert f"notes.pdf: 2 pages, {docs[0]['tokens']:,} tokens (whole)" in captured.err
    assert f"tool.py: 3 lines, {docs[1]['tokens']:,} tokens (whole)" in captured.err


def test_without_attachments_json_has_an_empty_documents_list(model_dir, capsys):
    assert ask(model_dir("llama"), "--json", "hi") == 0
    assert json.loads(capsys.readouterr().out)["documents"] == []


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    return make_book(tmp_path_factory.mktemp("ask") / "book.pdf", 8, words_per_page=40)


def test_a_document_over_the_context_falls_back_to_passages_with_a_notice(model_dir, book, capsys):
    rc = ask(model_dir("llama"), "--context", "1024", "--attach", str(book), "--json", "What is marker7?")
    captured = capsys.readouterr()
    assert rc == 0
    doc = json.loads(captured.out)["documents"][0]
    assert doc["mode"] == "passages" and doc["pages"] == 8
    assert "limit 1,024" in captured.err and "Falling back to passages" in captured.err
    assert "sending passages only" in captured.err and "page 7" in captured.err
    assert "Run with --context" in captured.err  # the model's 4,096 and memory would take it whole


def test_whole_refuses_with_the_numbers(model_dir, book, capsys):
    rc = ask(model_dir("llama"), "--context", "1024", "--attach", str(book), "--whole", "What is marker7?")
    captured = capsys.readouterr()
    assert rc == 1 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("folio: The documents are ")
    assert "limit 1,024" in lines[0]


def test_bad_attachment_exits_nonzero_with_one_line_and_no_traceback(model_dir, tmp_path):
    locked = make_encrypted(tmp_path / "locked.pdf")
    proc = subprocess.run(
        [sys.executable, "-m", "app", "ask", "--model", str(model_dir("llama")), "--attach", str(locked), "hi"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "folio: locked.pdf is password-protected; Folio cannot open encrypted PDFs. "
        "Save an unprotected copy and attach that."
    )


def test_unsupported_type_is_refused_before_the_model_loads(tmp_path, capsys):
    (tmp_path / "slides.pptx").write_bytes(b"PK\x03\x04")
    rc = main(["ask", "--model", str(tmp_path / "no-model-here"), "--attach", str(tmp_path / "slides.pptx"), "hi"])
    assert rc == 1
    assert capsys.readouterr().err.strip() == (
        "folio: slides.pptx is a PowerPoint file (.pptx), which Folio cannot read; "
        "Folio reads PDF, plain text, Markdown and source code files."
    )


def test_into_messages_puts_the_documents_in_the_last_user_turn(model_dir, tmp_path):
    from app import documents
    from app.engine import loader
    from app.engine.session import ChatSession

    session = ChatSession(loader.load(str(model_dir("llama"))), context_limit=4096)
    doc = documents.load(make_pdf(tmp_path / "a.pdf", ["Bees make honey."]))
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
               {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "What do bees make?"}]
    messages, plan = documents.into_messages(session, history, [doc])
    assert messages[:3] == history[:3] and history[3]["content"] == "What do bees make?"
    assert messages[3]["content"] == plan.message and "[page 1]\nBees make honey." in plan.message
    assert plan.message.endswith("What do bees make?") and plan.fits
    assert plan.used_tokens > len(session.encode(history[:3]))
