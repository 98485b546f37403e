"""A chip for one attached document: reading progress, then pages, tokens, fit, KV memory and warnings.

It shows what the documents room computed on the engine thread (`app.documents.inspect`'s dicts);
it never reads files itself. States: "reading", "ready" (goes in whole), "partial" (passages
only), "warning" (a long prefill ahead), "error" (the file cannot be used).
"""

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton, QVBoxLayout


class DocumentChip(QFrame):
    removeRequested = Signal(object)  # Path

    def __init__(self, path, parent=None):
        super().__init__(parent)
        self.path = Path(path)
        self.setObjectName("chip")
        self.name = QLabel(self.path.name)
        self.name.setObjectName("chipName")
        font = self.name.font()
        font.setBold(True)
        self.name.setFont(font)
        self.status = QLabel()
        self.status.setObjectName("chipStatus")
        self.memory = QLabel()
        self.memory.setObjectName("chipMemory")
        self.warning = QLabel()
        self.warning.setObjectName("chipWarning")
        self.warning.setWordWrap(True)
        self.remove = QToolButton(text="✕")
        self.remove.setAutoRaise(True)
        self.remove.setToolTip("Remove this document")
        self.remove.setAccessibleName(f"Remove attachment {self.path.name}")
        self.remove.clicked.connect(lambda: self.removeRequested.emit(self.path))

        text = QVBoxLayout()
        text.setContentsMargins(0, 0, 0, 0)
        text.setSpacing(1)
        for label in (self.name, self.status, self.memory, self.warning):
            label.setTextInteractionFlags(Qt.TextSelectableByMouse)
            text.addWidget(label)
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 4, 4, 4)
        row.addLayout(text, 1)
        row.addWidget(self.remove, 0, Qt.AlignTop)
        self.state = ""
        self.set_reading(0, 0)

    def _set_state(self, state: str):
        self.state = state
        self.setProperty("state", state)
        self.style().unpolish(self)
        self.style().polish(self)

    def set_reading(self, done: int, total: int):
        if total:
            self.status.setText(f"Reading… {done:,}/{total:,} pages ({100 * done // total}%)")
        else:
            self.status.setText("Reading…")
        self.memory.setVisible(False)
        self.warning.setVisible(False)
        self.setToolTip(str(self.path))
        self._set_state("reading")

    def set_info(self, info: dict):
        """Show one of `app.documents.inspect`'s dicts: an error, or the document's fit."""
        if info.get("error"):
            self.set_error(info["error"])
            return
        self.status.setText(info["summary"])
        self.memory.setText(info["memory"])
        self.memory.setVisible(True)
        self.warning.setText(info.get("warning", ""))
        self.warning.setVisible(bool(info.get("warning")))
        self.setToolTip(f"{self.path}\n{info.get('detail', '')}".strip())
        self._set_state("partial" if not info["whole"] else "warning" if info.get("warning") else "ready")

    def set_error(self, message: str):
        self.status.setText(message)
        self.status.setWordWrap(True)
        self.memory.setVisible(False)
        self.warning.setVisible(False)
        self.setToolTip(f"{self.path}\n{message}")
        self._set_state("error")
