"""Light and dark looks in the spirit of macOS: the system's color scheme, a quiet stylesheet.

On a Mac the native style draws the controls and follows the system appearance by itself;
elsewhere Fusion with a matching palette stands in. The stylesheet only adds what no
style provides: the sidebar's tint, the composer's rounded field, the stats bar's small type.
"""

import sys

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

ACCENT = "#0a84ff"

LIGHT = dict(window="#ffffff", base="#ffffff", alt="#f5f5f7", text="#1d1d1f", muted="#6e6e73",
             sidebar="#f3f2f7", border="#dcdce0", field="#ffffff", selected="#dfe3ea", button="#ffffff")
DARK = dict(window="#1e1e20", base="#1e1e20", alt="#2a2a2d", text="#f5f5f7", muted="#98989d",
            sidebar="#252528", border="#3a3a3d", field="#2c2c2f", selected="#3a3d44", button="#3a3a3d")


def is_dark(appearance: str) -> bool:
    if appearance in ("light", "dark"):
        return appearance == "dark"
    return QGuiApplication.styleHints().colorScheme() == Qt.ColorScheme.Dark


def apply(app: QApplication, appearance: str = "system"):
    """Apply `appearance` ("system", "light" or "dark") to the whole app."""
    hints = QGuiApplication.styleHints()
    scheme = {"light": Qt.ColorScheme.Light, "dark": Qt.ColorScheme.Dark}.get(appearance, Qt.ColorScheme.Unknown)
    if hasattr(hints, "setColorScheme"):
        hints.setColorScheme(scheme)
    dark = is_dark(appearance)
    c = DARK if dark else LIGHT
    if sys.platform != "darwin":
        app.setStyle("Fusion")
        app.setPalette(_palette(c))
    app.setStyleSheet(stylesheet(c) + ("" if sys.platform == "darwin" else scrollbars(c)))
    app.setProperty("folioDark", dark)


def _palette(c: dict) -> QPalette:
    p = QPalette()
    roles = {
        QPalette.Window: c["window"], QPalette.Base: c["base"], QPalette.AlternateBase: c["alt"],
        QPalette.Text: c["text"], QPalette.WindowText: c["text"], QPalette.ButtonText: c["text"],
        QPalette.Button: c["button"], QPalette.PlaceholderText: c["muted"], QPalette.ToolTipBase: c["alt"],
        QPalette.ToolTipText: c["text"], QPalette.Highlight: ACCENT, QPalette.HighlightedText: "#ffffff",
        QPalette.Link: ACCENT, QPalette.Mid: c["border"],
    }
    for role, color in roles.items():
        p.setColor(role, QColor(color))
    p.setColor(QPalette.Disabled, QPalette.Text, QColor(c["muted"]))
    p.setColor(QPalette.Disabled, QPalette.ButtonText, QColor(c["muted"]))
    return p


def scrollbars(c: dict) -> str:
    """Thin scrollbars without arrow buttons, as macOS draws them; the Mac's own are used there."""
    return f"""
QScrollBar:vertical {{ background: transparent; width: 10px; margin: 2px 2px 2px 0; border: none; }}
QScrollBar:horizontal {{ background: transparent; height: 10px; margin: 0 2px 2px 2px; border: none; }}
QScrollBar::handle {{ background: {c['border']}; border-radius: 4px; }}
QScrollBar::handle:hover {{ background: {c['muted']}; }}
QScrollBar::handle:vertical {{ min-height: 32px; }}
QScrollBar::handle:horizontal {{ min-width: 32px; }}
QScrollBar::add-line, QScrollBar::sub-line {{ width: 0; height: 0; border: none; background: none; }}
QScrollBar::add-page, QScrollBar::sub-page {{ background: none; }}
"""


def stylesheet(c: dict) -> str:
    return f"""
#sidebar {{ background: {c['sidebar']}; border-right: 1px solid {c['border']}; }}
#conversationList {{ background: transparent; border: none; outline: none; padding: 4px 6px; }}
#conversationList::item {{ padding: 7px 8px; border-radius: 7px; margin: 1px 0; color: {c['text']}; }}
#conversationList::item:selected {{ background: {c['selected']}; color: {c['text']}; }}
#conversationList::item:hover:!selected {{ background: {c['alt']}; }}
#searchBox {{ background: {c['field']}; border: 1px solid {c['border']}; border-radius: 7px; padding: 4px 8px; }}
#newChatButton, #attachButton {{ border: none; font-size: 18px; padding: 2px 8px; color: {c['muted']};
    border-radius: 6px; background: transparent; }}
#newChatButton:hover, #attachButton:hover {{ background: {c['selected']}; color: {c['text']}; }}
#sidebarEmpty {{ color: {c['muted']}; padding: 20px; }}
#chatView {{ background: {c['base']}; border: none; }}
#composer {{ background: {c['base']}; border-top: 1px solid {c['border']}; }}
#composer[dropping="true"] {{ background: {c['alt']}; border: 2px dashed {ACCENT}; }}
#composerInput {{ background: {c['field']}; border: 1px solid {c['border']}; border-radius: 10px;
    padding: 6px 8px; font-size: 14px; }}
#composerInput:focus {{ border: 1px solid {ACCENT}; }}
#composerBanner {{ color: {c['muted']}; }}
#sendButton {{ background: {ACCENT}; color: white; border: none; border-radius: 8px; padding: 7px 16px;
    font-weight: 600; min-width: 56px; }}
#sendButton:disabled {{ background: {c['selected']}; color: {c['muted']}; }}
#sendButton[busy="true"] {{ background: {c['button']}; color: {c['text']}; border: 1px solid {c['border']}; }}
#chip {{ border: 1px solid {c['border']}; border-radius: 10px; padding: 3px 10px; background: {c['alt']}; }}
#statsBar {{ background: {c['alt']}; border-top: 1px solid {c['border']}; }}
#statsBar QLabel {{ color: {c['muted']}; font-size: 11px; }}
#stat_model, #stat_state {{ color: {c['text']}; }}
#contextBar {{ background: {c['border']}; border: none; border-radius: 3px; }}
#contextBar::chunk {{ background: {ACCENT}; border-radius: 3px; }}
#banner {{ background: {'#3a2a12' if c is DARK else '#fff4e5'}; color: {c['text']};
    border-bottom: 1px solid {c['border']}; padding: 8px 14px; }}
#banner[kind="error"] {{ background: {'#3d1c1f' if c is DARK else '#fdecec'}; }}
#banner QPushButton {{ padding: 3px 10px; }}
#hint {{ color: {c['muted']}; font-size: 11px; }}
QToolBar {{ border: none; border-bottom: 1px solid {c['border']}; spacing: 8px; padding: 4px 8px;
    background: {c['window']}; }}
#modelPicker {{ min-width: 260px; padding: 3px 8px; }}
QStatusBar {{ background: {c['alt']}; border: none; }}
QStatusBar::item {{ border: none; }}
QSplitter::handle {{ background: {c['border']}; }}
"""
