"""The composer: multi-line input (Enter sends, Shift+Enter breaks the line), attach, send/stop.

Files come in by the attach button or by dropping them here; the composer only keeps their
paths and says so through `attachmentsChanged`: reading them is the documents room's job.
"""

from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog, QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QSizePolicy, QToolButton,
    QVBoxLayout,
)

from app.ui.document_chip import DocumentChip

DOCUMENT_FILTER = "Documents (*.pdf *.txt *.md *.markdown *.rst *.py *.js *.ts *.json *.csv *.html *.c *.cpp *.h *.rs *.go *.java *.swift);;All files (*)"


class _Input(QPlainTextEdit):
    submit = Signal()

    def keyPressEvent(self, event):
        if event.key() in (Qt.Key_Return, Qt.Key_Enter) and not (event.modifiers() & Qt.ShiftModifier):
            self.submit.emit()
            return
        super().keyPressEvent(event)

    # Drops of files go to the composer, not into the text.
    def canInsertFromMimeData(self, source):
        return not source.hasUrls() and super().canInsertFromMimeData(source)

    def dragEnterEvent(self, event):
        if event.mimeData().hasUrls():
            event.ignore()
            return
        super().dragEnterEvent(event)


class Composer(QFrame):
    sendRequested = Signal(str)
    stopRequested = Signal()
    attachmentsChanged = Signal(list)  # list[Path]

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("composer")
        self.setAcceptDrops(True)
        self.attachments: list[Path] = []
        self.chip_widgets: dict[Path, DocumentChip] = {}
        self._busy = False

        self.banner = QLabel()
        self.banner.setObjectName("composerBanner")
        self.banner.setVisible(False)
        self.cancel_edit = QToolButton(text="Cancel")
        self.cancel_edit.setVisible(False)
        self.cancel_edit.clicked.connect(self.end_edit)
        self.chips = QHBoxLayout()
        self.chips.setContentsMargins(0, 0, 0, 0)

        self.input = _Input()
        self.input.setObjectName("composerInput")
        self.input.setAccessibleName("Message")
        self.input.setPlaceholderText("Message Folio — Enter to send, Shift+Enter for a new line")
        self.input.setTabChangesFocus(True)
        self.input.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        self.input.setMinimumHeight(44)
        self.input.setMaximumHeight(180)
        self.input.submit.connect(self.send)
        self.input.textChanged.connect(self._refresh)

        self.attach = QToolButton(text="+")
        self.attach.setObjectName("attachButton")
        self.attach.setToolTip("Attach documents (PDF, text, Markdown, code)")
        self.attach.setAccessibleName("Attach documents")
        self.attach.clicked.connect(self.choose_files)
        self.button = QPushButton("Send")
        self.button.setObjectName("sendButton")
        self.button.setAccessibleName("Send")
        self.button.setDefault(False)
        self.button.setAutoDefault(False)
        self.button.clicked.connect(self._on_button)

        top = QHBoxLayout()
        top.addWidget(self.banner, 1)
        top.addWidget(self.cancel_edit)
        row = QHBoxLayout()
        row.setSpacing(8)
        row.addWidget(self.attach, 0, Qt.AlignBottom)
        row.addWidget(self.input, 1)
        row.addWidget(self.button, 0, Qt.AlignBottom)
        box = QVBoxLayout(self)
        box.setContentsMargins(16, 8, 16, 12)
        box.setSpacing(6)
        box.addLayout(top)
        box.addLayout(self.chips)
        box.addLayout(row)
        self.editing: int | None = None
        self._refresh()

    def text(self) -> str:
        return self.input.toPlainText()

    def set_busy(self, busy: bool):
        """While an answer streams the button stops it instead of sending."""
        self._busy = busy
        self._refresh()

    def _refresh(self):
        if self._busy:
            self.button.setText("Stop")
            self.button.setAccessibleName("Stop generating")
            self.button.setToolTip("Stop generating (Esc or ⌘.)")
            self.button.setEnabled(True)
        else:
            self.button.setText("Send")
            self.button.setAccessibleName("Send")
            self.button.setToolTip("Send (Enter)")
            self.button.setEnabled(bool(self.text().strip()))
        self.button.setProperty("busy", self._busy)
        self.button.style().unpolish(self.button)
        self.button.style().polish(self.button)

    def _on_button(self):
        if self._busy:
            self.stopRequested.emit()
        else:
            self.send()

    def send(self):
        text = self.text().strip()
        if not text or self._busy:
            return
        self.sendRequested.emit(text)

    def clear(self):
        self.input.clear()
        self.end_edit()

    # -- editing a previous message ---------------------------------------
    def begin_edit(self, message_id: int, text: str):
        self.editing = message_id
        self.input.setPlainText(text)
        self.banner.setText("Editing an earlier message: sending replaces it and everything after it.")
        self.banner.setVisible(True)
        self.cancel_edit.setVisible(True)
        self.input.setFocus()

    def end_edit(self):
        if self.editing is not None:
            self.editing = None
            self.input.clear()
        self.banner.setVisible(False)
        self.cancel_edit.setVisible(False)

    # -- attachments ------------------------------------------------------
    def choose_files(self):
        files, _ = QFileDialog.getOpenFileNames(self, "Attach Documents", str(Path.home()), DOCUMENT_FILTER)
        self.add_files([Path(f) for f in files])

    def add_files(self, files):
        new = [Path(f) for f in files if Path(f) not in self.attachments]
        if not new:
            return
        self.attachments.extend(new)
        self._rebuild_chips()
        self.attachmentsChanged.emit(list(self.attachments))

    def remove_file(self, path: Path):
        if path in self.attachments:
            self.attachments.remove(path)
            self._rebuild_chips()
            self.attachmentsChanged.emit(list(self.attachments))

    def failed_files(self) -> list[Path]:
        """Attached files whose chip shows why they cannot be read."""
        return [p for p in self.attachments if p in self.chip_widgets and self.chip_widgets[p].state == "error"]

    def keep_only(self, files):
        """After a send: only `files` stay attached (their chips keep what they show)."""
        self.attachments = [p for p in self.attachments if p in set(map(Path, files))]
        self._rebuild_chips()

    def clear_attachments(self):
        if self.attachments:
            self.attachments = []
            self._rebuild_chips()
            self.attachmentsChanged.emit([])

    def _rebuild_chips(self):
        # Chips of files still attached are kept: they hold what the engine thread reported.
        while self.chips.count():
            self.chips.takeAt(0)
        for path in [p for p in self.chip_widgets if p not in self.attachments]:
            self.chip_widgets.pop(path).deleteLater()
        for path in self.attachments:
            if path not in self.chip_widgets:
                self.chip_widgets[path] = DocumentChip(path)
                self.chip_widgets[path].removeRequested.connect(self.remove_file)
            self.chips.addWidget(self.chip_widgets[path])
        self.chips.addStretch(1)

    def show_reading(self, path: str, done: int, total: int):
        if Path(path) in self.chip_widgets:
            self.chip_widgets[Path(path)].set_reading(done, total)

    def show_documents(self, infos: list):
        """One dict per attached path from `app.documents.inspect`: pages, tokens, fit, memory, or the error."""
        for info in infos:
            if Path(info["path"]) in self.chip_widgets:
                self.chip_widgets[Path(info["path"])].set_info(info)

    def dragEnterEvent(self, event):
        if any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
            self.setProperty("dropping", True)
            self.style().polish(self)

    def dragLeaveEvent(self, event):
        self.setProperty("dropping", False)
        self.style().polish(self)

    def dropEvent(self, event):
        self.setProperty("dropping", False)
        self.style().polish(self)
        files = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        if files:
            event.acceptProposedAction()
            self.add_files(files)

    def sizeHint(self):
        return QSize(600, 90)

