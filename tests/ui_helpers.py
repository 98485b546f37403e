"""The main window for UI tests: opened on a fresh store with test preferences, a model loaded, closed cleanly;
and a chat view alone, shown with given entries."""

import pytest
from PySide6.QtCore import Qt

from app.settings import Settings
from app.store import Store
from app.ui.chat_view import ChatView
from app.ui.main_window import MainWindow

WAIT = 60_000


def open_window(qtbot, model=None, *, size=None, settings=None, **prefs):
    """A shown MainWindow; with `model`, imported and loaded. `prefs` override short answers in fp16."""
    settings = settings or Settings()
    for k, v in {"max_tokens": 24, "kv_mode": "fp16", **prefs}.items():
        settings.set(k, v)
    window = MainWindow(settings, Store())
    qtbot.addWidget(window)
    if size:
        window.resize(*size)
    window.show()
    if model is not None:
        window.add_model_folder(str(model))
        qtbot.waitUntil(lambda: bool(window.model_info.get("model_id")), timeout=WAIT)
    return window


def close_window(window):
    if window._manager is not None:
        window._manager.close()
    window.close()
    window.store.close()


@pytest.fixture
def window(qtbot, model_dir):
    """The window with the tiny random llama loaded (import this fixture into the test module)."""
    w = open_window(qtbot, model_dir("llama"), size=(1000, 700))
    yield w
    close_window(w)


@pytest.fixture
def endless_model(model_dir):
    """A model whose end-of-text token can never be sampled and whose context cannot fill in a test's
    time, so answers run until stopped (or to max_tokens)."""
    return model_dir("llama", eos_token_id=100_000, max_position_embeddings=1_000_000)


def send(qtbot, window, text):
    """Type into the composer and press Enter."""
    window.composer.input.setFocus()
    qtbot.keyClicks(window.composer.input, text)
    qtbot.keyClick(window.composer.input, Qt.Key_Return)


def wait_idle(qtbot, window):
    qtbot.waitUntil(lambda: not window.answers and window.pending is None, timeout=WAIT)


def shown_chat_view(qtbot, entries, height=600):
    """A ChatView 900 wide showing `entries`, on screen."""
    v = ChatView()
    qtbot.addWidget(v)
    v.resize(900, height)
    v.show()
    v.transcript.set_entries(entries)
    qtbot.waitExposed(v)
    return v
