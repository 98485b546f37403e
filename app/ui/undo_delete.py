"""Deleting a conversation with undo: it is hidden at once and removed from the store only when the undo window passes."""

from PySide6.QtCore import QObject, QTimer, Signal

UNDO_SECONDS = 8


class UndoableDelete(QObject):
    """At most one deletion waits at a time; starting another, or `finish()` on quit, completes the waiting one.

    Keeping the conversation in the store until then means undo loses nothing (messages, documents,
    its search index), and a crash during the window errs on the side of keeping the chat.
    """

    expired = Signal(int)  # conversation id: delete it for real now

    def __init__(self, parent=None, seconds: float = UNDO_SECONDS):
        super().__init__(parent)
        self.pending: int | None = None
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(int(seconds * 1000))
        self.timer.timeout.connect(self.finish)

    def start(self, conv_id: int):
        if self.pending is not None and self.pending != conv_id:
            self.finish()
        self.pending = conv_id
        self.timer.start()

    def undo(self) -> int | None:
        """The conversation given back, or None when nothing was waiting."""
        conv_id, self.pending = self.pending, None
        self.timer.stop()
        return conv_id

    def finish(self):
        self.timer.stop()
        conv_id, self.pending = self.pending, None
        if conv_id is not None:
            self.expired.emit(conv_id)
