"""Sending documents from the window: read and planned on the engine thread, stored, in the prompt, cancellable."""

import pytest
from PySide6.QtCore import QMimeData, QObject, QPointF, Qt, QUrl, Slot
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QFileOpenEvent
from PySide6.QtWidgets import QApplication

from pdf_factory import make_book, make_encrypted, make_pdf

pytest.register_assert_rewrite("ui_helpers")
pytest_plugins = ["ui_helpers"]  # the window and endless_model fixtures

from ui_helpers import WAIT, open_window, send, wait_idle  # noqa: E402


def attach(qtbot, window, *files):
    window.composer.add_files(list(files))
    chips = window.composer.chip_widgets
    qtbot.waitUntil(lambda: all(chips[f].state not in ("", "reading") for f in files), timeout=WAIT)


def shown(window, row: int) -> str:
    """The text the transcript paints for a row."""
    index = window.chat.transcript.index(row)
    return window.chat.delegate.document(index, window.chat.viewport().width(), window.chat.palette()).toPlainText()


def test_a_document_that_fits_goes_whole_into_the_prompt_and_stays_with_the_message(qtbot, window, tmp_path):
    pdf = make_pdf(tmp_path / "orchard.pdf", ["Apples ripen in September.", "Pears follow in October."])
    attach(qtbot, window, pdf)
    assert window.composer.chip_widgets[pdf].state == "ready"
    send(qtbot, window, "When do pears ripen?")
    wait_idle(qtbot, window)

    user, answer = window.store.messages(window.conversation_id)
    assert answer.state == "complete" and answer.content
    assert [a.file_name for a in user.attachments] == ["orchard.pdf"] and user.attachments[0].pages == 2
    assert "Pears follow in October." in user.attachments[0].text
    sent = user.stats["documents"][0]
    assert sent["mode"] == "full" and sent["attachment_id"] == user.attachments[0].id
    prompt = user.stats["prompt"]
    assert '<document name="orchard.pdf" pages="2">' in prompt and "[page 2]\nPears follow in October." in prompt
    assert prompt.endswith("When do pears ripen?") and user.content == "When do pears ripen?"
    # The composer is empty again; the bubble names the document and how it went in.
    assert window.composer.attachments == [] and window.composer.text() == ""
    assert "📎 orchard.pdf · 2 pages · " in shown(window, 0) and "· whole" in shown(window, 0)

    # The next turn sends the same prefix, so the conversation's cache is reused, documents included.
    first_prompt = answer.stats["prompt_tokens"]
    send(qtbot, window, "And apples?")
    wait_idle(qtbot, window)
    second = window.store.messages(window.conversation_id)[-1]
    assert second.state == "complete" and second.stats["cached_tokens"] >= first_prompt


def test_a_bad_file_keeps_its_message_on_the_chip_and_blocks_nothing_else(qtbot, window, tmp_path):
    good = make_pdf(tmp_path / "notes.pdf", ["Bees like clover."])
    locked = make_encrypted(tmp_path / "locked.pdf")
    attach(qtbot, window, good, locked)
    chip = window.composer.chip_widgets[locked]
    assert chip.state == "error" and "password-protected" in chip.status.text()
    send(qtbot, window, "What do bees like?")
    wait_idle(qtbot, window)
    user, answer = window.store.messages(window.conversation_id)
    assert [a.file_name for a in user.attachments] == ["notes.pdf"] and answer.state == "complete"
    # The unreadable file is still there, still saying why, until the user removes it.
    assert window.composer.attachments == [locked]
    assert window.composer.chip_widgets[locked].state == "error" and chip.isVisible()


def test_too_long_for_the_context_offers_a_larger_one_or_passages(qtbot, model_dir, tmp_path):
    window = open_window(qtbot, model_dir("llama"), max_tokens=8, context_length=1024)
    book = make_book(tmp_path / "book.pdf", 12, words_per_page=20)
    attach(qtbot, window, book)
    assert window.composer.chip_widgets[book].state == "partial"
    send(qtbot, window, "Which page is about marker3?")
    qtbot.waitUntil(lambda: "does not fit whole" in window.banner.text(), timeout=WAIT)
    # Nothing was sent or stored; the offer names the numbers and the larger context.
    assert window.store.messages(window.conversation_id) == [] and window.composer.text() == "Which page is about marker3?"
    assert "tokens of context are left (limit 1,024" in window.banner.text()
    assert window.banner.button.text().startswith("Use ") and window.banner.button.text().endswith("Tokens of Context")

    # Send again: the most relevant passages, labelled as such for the model and on screen.
    qtbot.mouseClick(window.composer.button, Qt.LeftButton)
    wait_idle(qtbot, window)
    user = window.store.messages(window.conversation_id)[0]
    assert user.stats["documents"][0]["mode"] == "passages" and 'excerpt="passages"' in user.stats["prompt"]
    assert "EXCERPT: only the" in user.stats["prompt"] and "passages only (page" in shown(window, 0)

    # Or take the larger context: the chat keeps it and the book goes in whole.
    window.new_conversation()
    attach(qtbot, window, book)
    send(qtbot, window, "Which page is about marker5?")
    qtbot.waitUntil(lambda: window.banner.button.isVisible() and "Tokens of Context" in window.banner.button.text(),
                    timeout=WAIT)
    offered = int(window.banner.button.text().split()[1].replace(",", ""))
    qtbot.mouseClick(window.banner.button, Qt.LeftButton)
    wait_idle(qtbot, window)
    conv = window.store.get_conversation(window.conversation_id)
    user, answer = window.store.messages(conv.id)
    assert conv.settings["context_length"] == offered > 1024
    assert user.stats["documents"][0]["mode"] == "full" and answer.stats["context_limit"] == offered
    window.close()


class StopDuringPrefill(QObject):
    """On the UI thread, after the window's own slot: notes what the window shows, then presses Stop."""

    def __init__(self, window):
        super().__init__()
        self.window, self.seen = window, []
        window.engine.worker.progress.connect(self.on_progress)

    @Slot(int, int, int)
    def on_progress(self, job, done, total):
        w = self.window
        self.seen.append((w.stats.text("state"), shown(w, len(w.chat.transcript.entries) - 1)))
        if done and len(self.seen) == 2:
            w.stop()


def test_cancelling_the_prefill_keeps_the_conversation_as_it_was(qtbot, endless_model, tmp_path):
    window = open_window(qtbot, endless_model, max_tokens=8)
    send(qtbot, window, "Hello")
    wait_idle(qtbot, window)
    before = [(m.role, m.content) for m in window.store.messages(window.conversation_id)]
    book = make_book(tmp_path / "long.pdf", 6, words_per_page=120)
    attach(qtbot, window, book)

    watcher = StopDuringPrefill(window)
    send(qtbot, window, "Summarize the book")
    wait_idle(qtbot, window)
    # Progress showed as tokens and percent while the document was read, then the stop undid the send.
    state, text = watcher.seen[1]
    assert state.startswith("prefilling ") and state.endswith("%")
    assert "Reading the prompt: " in text and " tokens (" in text
    assert [(m.role, m.content) for m in window.store.messages(window.conversation_id)] == before
    assert len(window.chat.transcript.entries) == 2
    assert window.composer.text() == "Summarize the book" and window.composer.attachments == [book]
    window.close()


def drag(window, widget, files):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(f)) for f in files])
    # Sent to the window's QWindow like the platform does, which finds the widget under the point.
    pos = QPointF(widget.mapTo(window, widget.rect().center()))
    handle = window.windowHandle()
    enter = QDragEnterEvent(pos.toPoint(), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(handle, enter)
    drop = QDropEvent(pos, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(handle, drop)
    return drop


def test_files_dropped_anywhere_on_the_window_or_the_dock_icon_are_attached(qtbot, window, tmp_path):
    a = make_pdf(tmp_path / "a.pdf", ["One page."])
    b = tmp_path / "b.md"
    b.write_text("# Notes\nSome notes.")
    c = tmp_path / "c.txt"
    c.write_text("plain text")
    assert drag(window, window.chat.viewport(), [a]).isAccepted()
    assert drag(window, window.sidebar.search, [b]).isAccepted()
    assert window.sidebar.search.text() == ""  # not pasted into the search box as a path
    drag(window, window.composer.input, [c])
    assert window.composer.attachments == [a, b, c] and window.composer.text() == ""
    # What macOS sends for a PDF dropped on the Dock icon.
    d = make_pdf(tmp_path / "d.pdf", ["From the Dock."])
    QApplication.sendEvent(QApplication.instance(), QFileOpenEvent(str(d)))
    assert window.composer.attachments == [a, b, c, d]
    qtbot.waitUntil(lambda: window.composer.chip_widgets[d].state == "ready", timeout=WAIT)
