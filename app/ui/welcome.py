"""First-run welcome: everything stays on this computer, a catalog model sized to its memory, the model manager.

Shown while the setting `first_run_done` is false; either button sets it. The suggestion reads
the curated catalog (app.hub.catalog) and total memory (psutil), never MLX, so it is instant.
"""

import sys
from pathlib import Path

import psutil
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.hub import catalog
from app.hub.errors import HubError

# Weights may take this share of memory: the rest holds a long int4 context, macOS and other apps.
# On a Mac, Metal lets the GPU use about 2/3 to 3/4 of memory; 0.4 leaves room for the cache in it.
WEIGHTS_SHARE = 0.4
# resources/ sits beside the app package in the repository and in Folio.app alike.
ICON = Path(__file__).resolve().parents[2] / "resources" / "icons" / "folio-256.png"


def this_computer() -> str:
    return "this Mac" if sys.platform == "darwin" else "this computer"


def suggest(entries: list, total_memory: int):
    """The largest catalog model whose weights fit WEIGHTS_SHARE of memory, or None."""
    fitting = [e for e in entries if e.download_bytes <= total_memory * WEIGHTS_SHARE]
    return max(fitting, key=lambda e: e.download_bytes, default=None)


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n < 10e9 else f"{n / 1e9:.0f} GB"


class WelcomeScreen(QWidget):
    """Emits openModelManager(repo_id of the suggestion, or "") or dismissed; both end the first run."""

    openModelManager = Signal(str)
    dismissed = Signal()

    def __init__(self, settings, total_memory: int | None = None, catalog_path=None, parent=None):
        super().__init__(parent)
        self.settings = settings
        self.setObjectName("welcome")
        self.setAccessibleName("Welcome to Folio")
        memory = total_memory if total_memory is not None else psutil.virtual_memory().total
        try:
            entries = catalog.load(catalog_path)
        except HubError:
            entries = []  # a missing catalog costs the suggestion, not the welcome
        self.suggestion = suggest(entries, memory)

        title = QLabel("Welcome to Folio")
        title.setObjectName("welcomeTitle")
        title.setStyleSheet("font-size: 24pt; font-weight: 600;")
        header = QHBoxLayout()
        header.setSpacing(16)
        if ICON.exists():
            icon = QLabel()
            icon.setPixmap(QPixmap(str(ICON)).scaled(72, 72, Qt.KeepAspectRatio, Qt.SmoothTransformation))
            header.addWidget(icon)
        header.addWidget(title, 1)
        privacy = QLabel(
            f"Everything stays on {this_computer()}. Your conversations, the documents you attach "
            "and the model itself never leave it: Folio answers offline, and goes online only "
            "when you search for or download a model."
        )
        privacy.setObjectName("welcomePrivacy")
        self.suggestion_label = QLabel(self._suggestion_text(memory, entries))
        self.suggestion_label.setObjectName("welcomeSuggestion")
        for label in (privacy, self.suggestion_label):
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextSelectableByMouse)

        self.open_button = QPushButton("Choose a Model…" if self.suggestion is None else f"Get {self.suggestion.name}…")
        self.open_button.setObjectName("welcomeOpenModelManager")
        self.open_button.setAccessibleName("Open the model manager")
        self.open_button.setDefault(True)
        self.open_button.clicked.connect(self._open_manager)
        self.later_button = QPushButton("Not Now")
        self.later_button.setObjectName("welcomeLater")
        self.later_button.clicked.connect(self._dismiss)

        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.later_button)
        buttons.addWidget(self.open_button)
        box = QVBoxLayout(self)
        box.setContentsMargins(48, 40, 48, 32)
        box.setSpacing(18)
        box.addLayout(header)
        box.addWidget(privacy)
        box.addWidget(self.suggestion_label)
        box.addStretch(1)
        box.addLayout(buttons)
        self.setMinimumWidth(520)

    def _suggestion_text(self, memory: int, entries: list) -> str:
        # Memory as Apple labels it: a "16 GB" Mac has 16 GiB.
        where = f"{this_computer()}'s {memory / 2**30:.0f} GB of memory"
        s = self.suggestion
        if s is None and not entries:
            return "To start, download a model in the model manager."
        if s is None:
            smallest = min(entries, key=lambda e: e.download_bytes)
            return (
                f"Even the smallest model in the catalog, {smallest.name} ({_gb(smallest.download_bytes)}), "
                f"is large for {where}. The model manager shows what fits."
            )
        return (
            f"Suggested for {where}: {s.name} ({s.parameters}, {s.quantization}, "
            f"{_gb(s.download_bytes)} download, up to {s.context_length:,} tokens of context). "
            f"{s.description}"
        )

    def _finish(self):
        self.settings.set("first_run_done", True)

    def _open_manager(self):
        self._finish()
        self.openModelManager.emit(self.suggestion.repo_id if self.suggestion else "")

    def _dismiss(self):
        self._finish()
        self.dismissed.emit()


def should_show(settings) -> bool:
    return not settings.first_run_done
