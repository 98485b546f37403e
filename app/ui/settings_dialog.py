"""Preferences (⌘,) and a conversation's own overrides, both drawn from app.settings.OPTIONS.

One form builder reads each Option's type, range and choices, so a setting is declared once
(in app/settings.py) and the dialog never repeats its default or its limits.
"""

from PySide6.QtWidgets import (
    QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QLabel, QPlainTextEdit, QSpinBox,
    QVBoxLayout, QWidget,
)

from app.settings import CONVERSATION_OVERRIDES, OPTIONS

LABELS = {
    "system_prompt": "System prompt:",
    "temperature": "Temperature:",
    "top_p": "Top-p:",
    "min_p": "Min-p:",
    "repetition_penalty": "Repetition penalty:",
    "max_tokens": "Max answer tokens:",
    "context_length": "Context length:",
    "kv_mode": "KV cache:",
    "appearance": "Appearance:",
}
CHOICE_LABELS = {
    "auto": "Auto (int4 where it is safe)", "int4": "int4", "int8": "int8", "fp16": "fp16 (uncompressed)",
    "system": "Follow system", "light": "Light", "dark": "Dark",
}
PREFERENCES = ("system_prompt", "temperature", "top_p", "max_tokens", "context_length", "kv_mode", "appearance")


class SettingsForm(QWidget):
    """One editor per option name; `values()` reads them back as the options' types."""

    def __init__(self, names, values: dict, parent=None):
        super().__init__(parent)
        self.editors = {}
        form = QFormLayout(self)
        for name in names:
            editor = self._editor(OPTIONS[name], values[name])
            editor.setAccessibleName(LABELS[name].rstrip(":"))
            editor.setObjectName(f"setting_{name}")
            self.editors[name] = editor
            form.addRow(LABELS[name], editor)
            if name == "context_length":
                form.addRow("", _hint("0 uses the model's own maximum."))

    @staticmethod
    def _editor(option, value):
        if option.choices:
            box = QComboBox()
            for choice in option.choices:
                box.addItem(CHOICE_LABELS.get(choice, choice), choice)
            box.setCurrentIndex(max(0, box.findData(value)))
            return box
        if option.type is float:
            spin = QDoubleSpinBox()
            spin.setDecimals(2)
            spin.setSingleStep(0.05)
            spin.setRange(option.minimum or 0.0, option.maximum if option.maximum is not None else 1e9)
            spin.setValue(value)
            return spin
        if option.type is int:
            spin = QSpinBox()
            spin.setRange(int(option.minimum or 0), int(min(option.maximum or 2**31 - 1, 2**31 - 1)))
            spin.setGroupSeparatorShown(True)
            spin.setValue(value)
            return spin
        edit = QPlainTextEdit(value)
        edit.setFixedHeight(90)
        edit.setTabChangesFocus(True)
        return edit

    def values(self) -> dict:
        out = {}
        for name, e in self.editors.items():
            if isinstance(e, QComboBox):
                out[name] = e.currentData()
            elif isinstance(e, (QSpinBox, QDoubleSpinBox)):
                out[name] = e.value()
            else:
                out[name] = e.toPlainText()
        return out


def _hint(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("hint")
    label.setWordWrap(True)
    return label


class _Dialog(QDialog):
    def __init__(self, title: str, intro: str, names, values: dict, parent=None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setMinimumWidth(460)
        self.form = SettingsForm(names, values)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        box = QVBoxLayout(self)
        if intro:
            box.addWidget(_hint(intro))
        box.addWidget(self.form)
        box.addWidget(buttons)


class PreferencesDialog(_Dialog):
    """The app's preferences; OK writes them to the settings file."""

    def __init__(self, settings, parent=None):
        super().__init__("Settings", "", PREFERENCES, settings.as_dict(), parent)
        self.settings = settings

    def apply(self) -> dict:
        """Save what changed; return {name: new value}."""
        changed = {}
        for name, value in self.form.values().items():
            if value != self.settings.get(name):
                self.settings.set(name, value)
                changed[name] = self.settings.get(name)
        return changed


class ConversationSettingsDialog(_Dialog):
    """This conversation's system prompt and sampling; values equal to the preferences are not kept."""

    def __init__(self, settings, overrides: dict, parent=None):
        values = {n: overrides.get(n, settings.get(n)) for n in CONVERSATION_OVERRIDES}
        super().__init__(
            "Chat Settings", "These apply to this chat only. Other settings are in Settings (⌘,).",
            CONVERSATION_OVERRIDES, values, parent,
        )
        self.settings = settings

    def overrides(self) -> dict:
        return {
            n: OPTIONS[n].coerce(v) for n, v in self.form.values().items()
            if OPTIONS[n].coerce(v) != self.settings.get(n)
        }


def effective(settings, overrides: dict | None) -> dict:
    """The preferences with a conversation's overrides on top (only the allowed ones)."""
    values = settings.as_dict()
    for name, value in (overrides or {}).items():
        if name in CONVERSATION_OVERRIDES:
            values[name] = OPTIONS[name].coerce(value)
    return values
