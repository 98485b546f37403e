"""Preferences and per-chat overrides persist; window geometry lives apart; the UI never imports mlx."""

import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import QSettings

from app import paths
from app.settings import Settings
from app.store import Store
from app.ui.main_window import MainWindow
from app.ui.settings_dialog import ConversationSettingsDialog, PreferencesDialog, effective

ROOT = Path(__file__).resolve().parent.parent


def test_preferences_persist_across_restarts(qtbot):
    settings = Settings()
    dialog = PreferencesDialog(settings)
    qtbot.addWidget(dialog)
    ed = dialog.form.editors
    ed["temperature"].setValue(0.25)
    ed["max_tokens"].setValue(321)
    ed["kv_mode"].setCurrentIndex(ed["kv_mode"].findData("int8"))
    ed["appearance"].setCurrentIndex(ed["appearance"].findData("dark"))
    ed["system_prompt"].setPlainText("Answer in French.")
    changed = dialog.apply()
    assert changed == {"temperature": 0.25, "max_tokens": 321, "kv_mode": "int8", "appearance": "dark",
                       "system_prompt": "Answer in French."}
    again = Settings()  # a restart reads the file back
    assert (again.temperature, again.max_tokens, again.kv_mode, again.appearance, again.system_prompt) == (
        0.25, 321, "int8", "dark", "Answer in French.")
    reopened = PreferencesDialog(again)
    qtbot.addWidget(reopened)
    assert reopened.form.values()["kv_mode"] == "int8"


def test_chat_overrides_are_stored_with_the_conversation(qtbot):
    settings = Settings()
    store = Store()
    conv = store.create_conversation()
    dialog = ConversationSettingsDialog(settings, {}, None)
    qtbot.addWidget(dialog)
    dialog.form.editors["temperature"].setValue(0.1)
    dialog.form.editors["system_prompt"].setPlainText("Be terse.")
    overrides = dialog.overrides()
    assert overrides == {"temperature": 0.1, "system_prompt": "Be terse."}  # unchanged values are not kept
    store.update_conversation(conv, settings=overrides)
    values = effective(settings, store.get_conversation(conv).settings)
    assert values["temperature"] == 0.1 and values["system_prompt"] == "Be terse."
    assert values["top_p"] == settings.top_p
    # kv_mode is not a per-chat setting: an override of it is ignored.
    assert effective(settings, {"kv_mode": "fp16"})["kv_mode"] == settings.kv_mode
    store.close()


def test_window_geometry_is_remembered_apart_from_preferences(qtbot):
    store = Store()
    Settings().set("temperature", 0.3)
    w = MainWindow(Settings(), store)
    qtbot.addWidget(w)
    w.show()
    w.resize(760, 560)
    w.splitter.setSizes([250, 510])
    w.close()
    ini = paths.data_dir() / "window.ini"
    assert ini.exists() and "geometry" not in paths.settings_file().read_text()
    assert QSettings(str(ini), QSettings.IniFormat).value("geometry") is not None
    w2 = MainWindow(Settings(), store)
    qtbot.addWidget(w2)
    w2.show()
    assert (w2.width(), w2.height()) == (760, 560)
    assert w2.splitter.sizes()[0] == 250
    w2.close()
    store.close()


def test_the_ui_never_imports_mlx():
    code = (
        "import sys; import app.ui.app, app.ui.main_window, app.ui.worker; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    for path in (ROOT / "app" / "ui").glob("*.py"):
        text = path.read_text()
        assert "import mlx" not in text and "from mlx" not in text, path
