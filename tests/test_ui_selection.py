"""Selecting message text with the mouse and copying it: inside one message, streaming or not."""

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QGuiApplication

from app.ui.chat_view import Entry
from ui_helpers import shown_chat_view

ANSWER = "Pears ripen in October.\n\nApples ripen in September, mostly."


def point_of(v, row: int, needle: str, end=False) -> QPoint:
    """Where the start (or the end) of `needle` is drawn in the viewport."""
    index = v.transcript.index(row)
    box, doc = v.delegate._geometry(index, v.visualRect(index), v.palette())
    cursor = doc.find(needle)
    assert not cursor.isNull(), needle
    at = cursor.position() if end else cursor.selectionStart()
    block = doc.findBlock(at)
    line = block.layout().lineForTextPosition(at - block.position())
    x = line.cursorToX(at - block.position())[0]
    y = line.y() + line.height() / 2
    top = doc.documentLayout().blockBoundingRect(block).topLeft()
    return (box.topLeft() + QPointF(v.delegate.PAD, v.delegate.PAD) + top + QPointF(x, y)).toPoint()


def drag(qtbot, v, start: QPoint, stop: QPoint):
    qtbot.mousePress(v.viewport(), Qt.LeftButton, pos=start)
    qtbot.mouseMove(v.viewport(), pos=(start + stop) / 2)
    qtbot.mouseMove(v.viewport(), pos=stop)
    qtbot.mouseRelease(v.viewport(), Qt.LeftButton, pos=stop)


def test_dragging_selects_text_in_a_message_and_cmd_c_copies_it(qtbot):
    v = shown_chat_view(qtbot, [Entry(1, "user", "When do pears ripen?"), Entry(2, "assistant", ANSWER)])
    before = v.viewport().grab().toImage()
    drag(qtbot, v, point_of(v, 1, "ripen in October"), point_of(v, 1, "September", end=True))
    assert v.selected_text() == "ripen in October.\nApples ripen in September"
    assert v.viewport().grab().toImage() != before  # the selection is painted
    qtbot.keyClick(v, Qt.Key_C, Qt.ControlModifier)
    assert QGuiApplication.clipboard().text() == "ripen in October.\nApples ripen in September"
    # A drag that leaves the message selects to its end, never into the next message.
    drag(qtbot, v, point_of(v, 0, "pears"), QPoint(10, v.viewport().height() - 5))
    assert v.selected_text().startswith("pears ripen?") and "October" not in v.selected_text()
    # A plain click leaves nothing selected.
    qtbot.mouseClick(v.viewport(), Qt.LeftButton, pos=point_of(v, 1, "Pears"))
    assert v.selected_text() == ""


def test_double_click_selects_a_word_and_select_all_the_whole_message(qtbot):
    v = shown_chat_view(qtbot, [Entry(1, "assistant", ANSWER)])
    qtbot.mouseDClick(v.viewport(), Qt.LeftButton, pos=point_of(v, 0, "Septem") + QPoint(3, 0))
    assert v.selected_text() == "September"
    qtbot.keyClick(v, Qt.Key_C, Qt.ControlModifier)
    assert QGuiApplication.clipboard().text() == "September"
    qtbot.keyClick(v, Qt.Key_A, Qt.ControlModifier)
    assert "Pears ripen in October." in v.selected_text() and v.selected_text().rstrip().endswith("Regenerate")


def test_links_still_act_on_a_click_and_a_streaming_answer_keeps_its_selection(qtbot):
    v = shown_chat_view(qtbot, [Entry(1, "user", "hi"), Entry(2, "assistant", "Pears ripen", "generating")])
    drag(qtbot, v, point_of(v, 1, "Pears"), point_of(v, 1, "ripen", end=True))
    assert v.selected_text() == "Pears ripen"
    for _ in range(40):  # the answer streams on under the selection
        v.transcript.update(2, append="and more words. ")
        v.viewport().repaint()
    assert v.selected_text() == "Pears ripen" and 2 in v.delegate._live
    v.transcript.update(2, state="complete")
    copied = []
    v.copied.connect(copied.append)
    qtbot.mouseClick(v.viewport(), Qt.LeftButton, pos=point_of(v, 1, "Copy") + QPoint(3, 0))
    assert copied == [v.transcript.entries[1].content]
