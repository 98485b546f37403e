"""The menu bar, its shortcuts and macOS roles, and what its File / Edit / Help items do."""

import json
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QAction, QDesktopServices, QGuiApplication, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMessageBox

from app import __version__, log
from app.engine.errors import FolioError
from app.ui.diagnostics import report


class Menus:
    """Mixed into MainWindow: builds `actions_by_name` and carries the actions that are only menu items."""

    def _action(self, menu, text, slot, shortcut=None, role=None):
        action = QAction(text, self)
        if shortcut:
            keys = shortcut if isinstance(shortcut, (list, tuple)) else [shortcut]
            action.setShortcuts([QKeySequence(k) for k in keys])
        if role is not None:
            action.setMenuRole(role)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_menus(self):
        mb = self.menuBar()
        a = {}
        file = mb.addMenu("&File")
        a["new"] = self._action(file, "New Chat", self.new_conversation, "Ctrl+N")
        file.addSeparator()
        a["export_md"] = self._action(file, "Export Chat as Markdown…", lambda: self.export("md"))
        a["export_json"] = self._action(file, "Export Chat as JSON…", lambda: self.export("json"))
        a["import"] = self._action(file, "Import Chat…", self.import_chat)
        file.addSeparator()
        a["close"] = self._action(file, "Close Window", self.close, "Ctrl+W")
        # On macOS Qt moves these three into the application menu by their roles.
        a["preferences"] = self._action(file, "Settings…", self.edit_preferences, "Ctrl+,",
                                        QAction.PreferencesRole)
        a["quit"] = self._action(file, "Quit Folio", self.close, "Ctrl+Q", QAction.QuitRole)
        edit = mb.addMenu("&Edit")
        a["undo_delete"] = self._action(edit, "Undo Delete Chat", self.undo_delete, "Ctrl+Z")
        a["undo_delete"].setEnabled(False)
        edit.addSeparator()
        a["copy_answer"] = self._action(edit, "Copy Last Answer", self.copy_last_answer, "Ctrl+Shift+C")
        a["find"] = self._action(edit, "Search Chats", self.sidebar.focus_search, "Ctrl+F")
        chat = mb.addMenu("&Chat")
        a["stop"] = self._action(chat, "Stop", self.stop, ["Esc", "Ctrl+."])
        a["regenerate"] = self._action(chat, "Regenerate Answer", lambda: self.regenerate(None), "Ctrl+R")
        a["chat_settings"] = self._action(chat, "Chat Settings…", self.edit_chat_settings)
        chat.addSeparator()
        a["model"] = self._action(chat, "Choose Model", self.focus_picker, "Ctrl+L")
        a["manager"] = self._action(chat, "Model Manager…", self.open_model_manager, "Ctrl+Shift+M")
        a["import_model"] = self._action(chat, "Import Model Folder…", self.import_model_folder)
        help_ = mb.addMenu("&Help")
        a["log"] = self._action(help_, "Show Log File", self.show_log)
        a["diagnostics"] = self._action(help_, "Copy Diagnostics", self.copy_diagnostics)
        a["about"] = self._action(help_, "About Folio", self.about, role=QAction.AboutRole)
        self.actions_by_name = a

    def copy_last_answer(self):
        for e in reversed(self.chat.transcript.entries):
            if e.role == "assistant" and e.content:
                QGuiApplication.clipboard().setText(e.content)
                self.stats.flash("Copied the last answer", 1500)
                return

    def export(self, kind: str):
        if self.conversation_id is None:
            return
        conv = self.store.get_conversation(self.conversation_id)
        suffix = ".md" if kind == "md" else ".json"
        path, _ = QFileDialog.getSaveFileName(self, "Export Chat", str(Path.home() / f"{conv.title}{suffix}"))
        if not path:
            return
        try:
            if kind == "md":
                text = self.store.export_markdown(conv.id)
            else:
                text = json.dumps(self.store.export_json(conv.id), indent=2, ensure_ascii=False)
            Path(path).write_text(text, encoding="utf-8")
        except (OSError, FolioError) as e:
            self.banner.show_message(f"Could not export: {e}", "error")

    def import_chat(self):
        path, _ = QFileDialog.getOpenFileName(self, "Import Chat", str(Path.home()), "Folio chat (*.json)")
        if not path:
            return
        try:
            conv_id = self.store.import_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, FolioError) as e:
            self.banner.show_message(f"Could not import {Path(path).name}: {e}", "error")
            return
        self.sidebar.refresh()
        self.open_conversation(conv_id)

    def show_log(self):
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(log.log_file())))

    def diagnostics(self) -> str:
        return report(self.settings, self.model_info, self.last_stats)

    def copy_diagnostics(self):
        QGuiApplication.clipboard().setText(self.diagnostics())
        self.stats.flash("Diagnostics copied: paste them into your bug report", 4000)

    def about(self):
        QMessageBox.about(
            self, "About Folio",
            f"<b>Folio {__version__}</b><p>Private, offline, long-context chat with local models. "
            "Everything stays on this computer.</p>",
        )
