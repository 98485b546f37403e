"""The one-line banner above the transcript: a message, an optional action button, a dismiss button."""

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget


class Banner(QWidget):
    """A one-line message above the transcript, with an optional action button."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("banner")
        self.setAttribute(Qt.WA_StyledBackground)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.button = QPushButton()
        self.close_button = QPushButton("✕")
        self.close_button.setFlat(True)
        self.close_button.setAccessibleName("Dismiss")
        self.close_button.clicked.connect(self.hide)
        box = QHBoxLayout(self)
        box.setContentsMargins(14, 8, 8, 8)
        box.addWidget(self.label, 1)
        box.addWidget(self.button)
        box.addWidget(self.close_button)
        self._action = None
        self.button.clicked.connect(lambda: self._action and self._action())
        self.hide()

    def show_message(self, text: str, kind: str = "info", action: str = "", on_action=None):
        self.label.setText(text)
        self.setProperty("kind", kind)
        self.style().unpolish(self)
        self.style().polish(self)
        self.button.setText(action)
        self.button.setVisible(bool(action))
        self._action = on_action
        self.show()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""
