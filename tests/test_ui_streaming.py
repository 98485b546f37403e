"""Streaming into the transcript: only the tail of the answer is laid out again, and the list rarely relaid out."""

import random

from PySide6.QtGui import QTextDocument

from app.ui import chat_view, markdown
from app.ui.chat_view import Entry, stable_cut
from ui_helpers import shown_chat_view

PIECES = ["Some words here ", "and **bold** ", "`x` ", "\n\n", "- item one\n", "```python\nprint(1)\n", "```\n",
          "# Head\n", "more text. ", "~~~\n", "\n"]


def test_the_settled_part_ends_at_a_blank_line_outside_code_fences():
    assert stable_cut("short", tail_chars=10) == 0
    text = "para one\n\npara two\n\n" + "x" * 30
    assert stable_cut(text, tail_chars=10) == len("para one\n\npara two\n\n")
    fenced = "intro\n\n```\ncode\n\nmore code\n" + "y" * 30
    assert stable_cut(fenced, tail_chars=10) == len("intro\n\n")  # never inside an open fence
    closed = "```python\na\n```python\n\nb\n```\n\nafter\n" + "z" * 30
    # "```python" inside a fence does not close it; the bare "```" does.
    assert stable_cut(closed, tail_chars=10) == len("```python\na\n```python\n\nb\n```\n\n")


def test_a_streamed_answer_shows_the_same_text_as_a_full_render(qtbot, monkeypatch):
    monkeypatch.setattr(chat_view, "LIVE_TAIL_CHARS", 200)  # settle often, to exercise every path
    v = shown_chat_view(qtbot, [Entry(1, "user", "hi"), Entry(2, "assistant", "", "generating")], height=700)
    rng = random.Random(3)
    index = v.transcript.index(1)
    for _ in range(300):
        v.transcript.update(2, append=rng.choice(PIECES))
        live = v.delegate.document(index, 900, v.palette())
        e = v.transcript.entries[1]
        full = QTextDocument()
        full.setHtml(v.delegate._html(e, v.delegate._colors(v.palette()), True))
        assert live.toPlainText().split() == full.toPlainText().split()
    assert v.delegate._live[2].head  # part of the answer was settled and kept
    # Copy links keep pointing at the right code block across the settled part and the tail.
    blocks = v.delegate._blocks[2]
    assert blocks and blocks == markdown.render(v.transcript.entries[1].content).code_blocks
    v.transcript.update(2, state="complete")
    v.delegate.document(index, 900, v.palette())
    assert 2 not in v.delegate._live  # finished: rendered whole, once


def test_streaming_asks_the_other_rows_for_their_size_only_when_the_answer_grows_a_step(qtbot, monkeypatch):
    calls = []
    original = chat_view.MessageDelegate.sizeHint
    monkeypatch.setattr(chat_view.MessageDelegate, "sizeHint", lambda self, o, i: calls.append(i.row()) or original(self, o, i))
    entries = []
    for i in range(50):
        entries += [Entry(2 * i, "user", f"question {i}"), Entry(2 * i + 1, "assistant", f"answer {i}\n\n- a\n- b")]
    v = shown_chat_view(qtbot, entries + [Entry(999, "assistant", "", "generating")], height=700)
    qtbot.waitExposed(v)
    rng = random.Random(0)
    calls.clear()
    updates = 200
    for _ in range(updates):
        v.transcript.update(999, append="".join(rng.choice(["word ", "other ", "line\n", "\n\n"]) for _ in range(3)))
        qtbot.wait(0)
    other_rows = sum(1 for r in calls if r != len(entries))
    relayouts = other_rows / len(entries)
    assert relayouts < updates / 4, f"{relayouts:.0f} full relayouts for {updates} updates"
    assert v.transcript.entries[-1].content and v.verticalScrollBar().value() == v.verticalScrollBar().maximum()
