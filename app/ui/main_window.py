"""The main window: sidebar, transcript, composer, model picker, stats bar and the menus.

It is the one place that ties the store (what was said), the engine worker (what the model
says next) and the widgets together. Every answer is a job: the store gets its text as it
streams, the transcript only when its conversation is the one on screen.
"""

import importlib.metadata
import json
import platform
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QEvent, QSettings, Qt, QUrl
from PySide6.QtGui import QAction, QDesktopServices, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QApplication, QComboBox, QFileDialog, QHBoxLayout, QLabel, QMainWindow, QMessageBox, QPushButton, QSplitter,
    QStackedWidget, QToolBar, QVBoxLayout, QWidget,
)

from app import __version__, log, paths
from app.engine.errors import FolioError
from app.settings import CONVERSATION_OVERRIDES
from app.ui import theme
from app.ui.chat_view import ChatView, Entry, entry_from_message
from app.ui.composer import Composer
from app.ui.settings_dialog import ConversationSettingsDialog, PreferencesDialog, effective
from app.ui.sidebar import Sidebar
from app.ui.stats_bar import StatsBar
from app.ui.worker import Engine

logger = log.get("ui")

MANAGER = "__manager__"


@dataclass
class Answer:
    """One job in flight: where its text goes, and what to give back if it is cancelled before a word."""

    conversation_id: int
    message_id: int
    text: str = ""
    user_message_id: int | None = None  # the message this send added; None for a regenerate
    draft: tuple = ()  # (text, files) the composer held before sending


@dataclass
class Pending:
    """A send whose documents the engine thread is reading and planning; nothing is stored yet."""

    request: int
    conversation_id: int
    text: str
    files: list  # paths of new attachments
    stored: list  # dicts of documents already in the store (an edited message's)
    editing: int | None
    passages_ok: bool = False  # the user saw that they do not fit whole and chose passages


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


class MainWindow(QMainWindow):
    def __init__(self, settings, store, engine: Engine | None = None, parent=None):
        super().__init__(parent)
        self.settings = settings
        self.store = store
        self.engine = engine or Engine(self)
        self.conversation_id: int | None = None
        self.answers: dict[int, Answer] = {}  # job id -> answer
        self.pending: Pending | None = None  # a send waiting for its documents
        self.models: list[dict] = []  # installed models, from app.hub through the worker
        self._manager = None
        self._offer = None  # (conversation, text, files) told "does not fit whole"
        self.model_name = ""  # requested
        self.model_info: dict = {}  # loaded
        self.last_stats: dict = {}
        self.setWindowTitle("Folio")
        self.setMinimumSize(720, 480)
        self.setAcceptDrops(True)

        self._build_widgets()
        self._build_toolbar()
        self._build_menus()
        self._connect_engine()
        # Files dropped on the Dock icon (or opened with Folio in Finder) come as QFileOpenEvents.
        QApplication.instance().installEventFilter(self)
        self.window_state = QSettings(str(paths.data_dir() / "window.ini"), QSettings.IniFormat)
        self._restore_geometry()

        if store.notice:
            self.banner.show_message(store.notice, "error")
        self._fill_picker([])
        self.refresh_models()
        self.sidebar.refresh()
        ids = self.sidebar.conversation_ids()
        self.open_conversation(ids[0] if ids else None)

    # -- construction -----------------------------------------------------
    def _build_widgets(self):
        self.sidebar = Sidebar(self.store)
        self.sidebar.setMinimumWidth(180)
        self.chat = ChatView()
        self.composer = Composer()
        self.banner = Banner()
        self.stats = StatsBar()
        right = QWidget()
        col = QVBoxLayout(right)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        col.addWidget(self.banner)
        col.addWidget(self.chat, 1)
        col.addWidget(self.composer)
        self.splitter = QSplitter()
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setHandleWidth(1)
        self.splitter.addWidget(self.sidebar)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([240, 760])
        self.chat_page = QWidget()
        outer = QVBoxLayout(self.chat_page)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        outer.addWidget(self.splitter, 1)
        outer.addWidget(self.stats)
        # The chat, or the first-run welcome in its place.
        self.pages = QStackedWidget()
        self.pages.addWidget(self.chat_page)
        self.setCentralWidget(self.pages)
        self.welcome = None
        # A file dropped on the search box is an attachment, not text to search for.
        self.sidebar.search.setAcceptDrops(False)

        self.sidebar.conversationSelected.connect(self.open_conversation)
        self.sidebar.searchHitSelected.connect(self._open_hit)
        self.sidebar.newRequested.connect(self.new_conversation)
        self.sidebar.renameRequested.connect(self.rename_conversation)
        self.sidebar.deleteRequested.connect(self.delete_conversation)
        self.composer.sendRequested.connect(self.send)
        self.composer.stopRequested.connect(self.stop)
        self.composer.attachmentsChanged.connect(self._inspect_documents)
        self.chat.editRequested.connect(self.edit_message)
        self.chat.regenerateRequested.connect(self.regenerate)
        self.chat.copied.connect(lambda _: self.stats.flash("Copied", 1500))

    def _build_toolbar(self):
        bar = QToolBar("Model")
        bar.setObjectName("mainToolbar")
        bar.setMovable(False)
        bar.setFloatable(False)
        self.picker = QComboBox()
        self.picker.setObjectName("modelPicker")
        self.picker.setAccessibleName("Model")
        self.picker.setToolTip("Choose a model (⌘L)")
        self.picker.activated.connect(self._picker_activated)
        bar.addWidget(QLabel(" Model "))
        bar.addWidget(self.picker)
        spacer = QWidget()
        spacer.setSizePolicy(spacer.sizePolicy().horizontalPolicy().Expanding, spacer.sizePolicy().verticalPolicy())
        bar.addWidget(spacer)
        self.chat_settings_button = QPushButton("Chat Settings")
        self.chat_settings_button.setAccessibleName("Settings for this chat")
        self.chat_settings_button.clicked.connect(self.edit_chat_settings)
        bar.addWidget(self.chat_settings_button)
        self.addToolBar(bar)
        self.setUnifiedTitleAndToolBarOnMac(True)

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

    def _connect_engine(self):
        w = self.engine.worker
        w.loading.connect(self._on_loading)
        w.loaded.connect(self._on_loaded)
        w.loadFailed.connect(self._on_load_failed)
        w.started.connect(self._on_started)
        w.progress.connect(self._on_progress)
        w.text.connect(self._on_text)
        w.live.connect(self._on_live)
        w.finished.connect(self._on_finished)
        w.failed.connect(self._on_failed)
        # Bound methods, not lambdas: a lambda would run in the worker's thread.
        w.notice.connect(self._on_notice)
        w.documentProgress.connect(self.composer.show_reading)
        w.documentsInspected.connect(self.composer.show_documents)
        w.prepared.connect(self._on_prepared)
        w.prepareFailed.connect(self._on_prepare_failed)
        w.modelsListed.connect(self._on_models_listed)

    # -- models -----------------------------------------------------------
    def refresh_models(self):
        """Ask the engine thread for the installed models (app.hub checks folders with the loader,
        which imports mlx); the picker fills when `modelsListed` comes back."""
        self.engine.list_models(self.settings.imported_models)

    def _on_models_listed(self, models: list):
        first = not self.models and self.picker.property("listed") is None
        self.picker.setProperty("listed", True)
        self._fill_picker(models)
        if not models:
            self.banner.show_message(
                "No model is installed yet. Open the Model Manager to download one, "
                "or import a model folder you already have.",
                "info", "Open Model Manager", self.open_model_manager,
            )
        elif self.banner.text().startswith("No model is installed"):
            self.banner.hide()
        if first and not self.model_name and self.settings.last_model and self._picker_has(self.settings.last_model):
            self.choose_model(self.settings.last_model)

    def _fill_picker(self, models: list):
        self.models = list(models)
        self.picker.blockSignals(True)
        self.picker.clear()
        for m in models:
            label = m["name"] if m["source"] == "hub" else Path(m["name"]).name
            self.picker.addItem(label, m["name"])
            if m["problem"]:  # listed so the user sees it, but it cannot be chosen
                i = self.picker.count() - 1
                self.picker.setItemData(i, m["problem"], Qt.ToolTipRole)
                self.picker.model().item(i).setEnabled(False)
        if self.model_name and not self._picker_has(self.model_name):
            self.picker.insertItem(0, Path(self.model_name).name, self.model_name)
        if not self.picker.count():
            self.picker.addItem("No model installed", None)
        self.picker.insertSeparator(self.picker.count())
        self.picker.addItem("Open Model Manager…", MANAGER)
        index = self.picker.findData(self.model_name) if self.model_name else -1
        self.picker.setCurrentIndex(max(index, 0))
        self.picker.blockSignals(False)

    def _picker_has(self, name: str) -> bool:
        return self.picker.findData(name) >= 0

    def _picker_activated(self, index: int):
        name = self.picker.itemData(index)
        if name == MANAGER:
            self.picker.setCurrentIndex(max(0, self.picker.findData(self.model_name)))
            self.open_model_manager()
        elif name:
            self.choose_model(name)

    def focus_picker(self):
        self.picker.setFocus()
        self.picker.showPopup()

    def choose_model(self, name: str):
        if name == self.model_info.get("name"):
            return
        if self.answers:
            self.banner.show_message("Wait for the answer to finish (or stop it) before switching models.", "info")
            self.picker.setCurrentIndex(max(0, self.picker.findData(self.model_name)))
            return
        self.model_name = name
        self.model_info = {}
        if not self._picker_has(name):
            self.picker.insertItem(0, Path(name).name, name)
        self.picker.setCurrentIndex(self.picker.findData(name))
        self.engine.load(name)

    def open_model_manager(self):
        try:
            from app.ui.model_manager import ModelManagerWindow
        except ModuleNotFoundError:
            QMessageBox.information(
                self, "Model Manager",
                "The model manager is not part of this build. Download a model from a terminal with\n\n"
                "    folio models pull mlx-community/Qwen3-4B-Instruct-2507-4bit\n\n"
                "or choose a model folder with Chat ▸ Import Model Folder.",
            )
            return
        if self._manager is None:
            self._manager = ModelManagerWindow(self)
            self._manager.modelChosen.connect(self._manager_chose)
            # Downloads, imports and deletions there change what the picker offers.
            self._manager.installedChanged.connect(self._on_models_listed)
        else:
            self._manager.refresh()
        self._manager.show()
        self._manager.raise_()
        return self._manager

    def import_model_folder(self):
        folder = QFileDialog.getExistingDirectory(self, "Import Model Folder", str(Path.home()))
        if folder:
            self.add_model_folder(folder)

    def add_model_folder(self, folder: str):
        """Remember a local model folder; the worker validates it fully when it loads."""
        path = Path(folder)
        if not (path / "config.json").exists():
            self.banner.show_message(f"{path.name} has no config.json; it is not a Hugging Face model folder.", "error")
            return
        imported = list(self.settings.imported_models)
        if str(path) not in imported:
            self.settings.set("imported_models", imported + [str(path)])
        self.refresh_models()
        self.banner.hide()
        self.choose_model(str(path))

    def _manager_chose(self, name: str):
        self.refresh_models()
        self.choose_model(name)

    def _on_loading(self, name: str):
        self.stats.set_model(Path(name).name if "/" not in name or Path(name).exists() else name)
        self.stats.set_state("loading…")
        self.picker.setEnabled(False)

    def _on_loaded(self, info: dict):
        self.model_info = info
        self.picker.setEnabled(True)
        self.settings.set("last_model", info["name"])
        self.stats.set_model(info["model_id"])
        self.stats.set_backend(info["backend"])
        self.stats.set_state("idle")
        self.chat.set_model_name(info["model_id"])
        if self.banner.property("kind") != "error":
            self.banner.hide()
        logger.info("model ready: %s", info)

    def _on_load_failed(self, name: str, reason: str):
        self.picker.setEnabled(True)
        self.model_name = ""
        self.stats.set_model("")
        self.stats.set_state("idle")
        self.banner.show_message(reason, "error", "Open Model Manager", self.open_model_manager)

    # -- conversations ----------------------------------------------------
    def open_conversation(self, conv_id: int | None):
        self.conversation_id = conv_id
        self.sidebar.select(conv_id)
        self.composer.end_edit()
        entries = []
        if conv_id is not None:
            streaming = {a.message_id: a for a in self.answers.values() if a.conversation_id == conv_id}
            for m in self.store.messages(conv_id):
                if m.role == "system":
                    continue
                e = entry_from_message(m)
                if m.id in streaming:
                    e.content = streaming[m.id].text
                entries.append(e)
            self.setWindowTitle(f"{self.store.get_conversation(conv_id).title} — Folio")
        else:
            self.setWindowTitle("Folio")
        self.chat.transcript.set_entries(entries)
        waiting = self.pending is not None and self.pending.conversation_id == conv_id
        self.composer.set_busy(self._job_for(conv_id) is not None or waiting)

    def _open_hit(self, conv_id: int, message_id: int):
        self.open_conversation(conv_id)
        row = self.chat.transcript.row_of(message_id)
        if row >= 0:
            self.chat.scrollTo(self.chat.transcript.index(row), ChatView.PositionAtTop)

    def new_conversation(self):
        conv_id = self.store.create_conversation(model_id=self.model_info.get("model_id", ""))
        self.sidebar.search.clear()
        self.sidebar.refresh()
        self.open_conversation(conv_id)
        self.composer.input.setFocus()
        return conv_id

    def rename_conversation(self, conv_id: int, title: str):
        self.store.rename_conversation(conv_id, title)
        self.sidebar.refresh()
        if conv_id == self.conversation_id:
            self.setWindowTitle(f"{title} — Folio")

    def delete_conversation(self, conv_id: int):
        job = self._job_for(conv_id)
        if job is not None:
            self.engine.stop(job)
            self.answers.pop(job, None)
        self.store.delete_conversation(conv_id)
        self.engine.forget(conv_id)
        self.sidebar.refresh()
        if conv_id == self.conversation_id:
            ids = self.sidebar.conversation_ids()
            self.open_conversation(ids[0] if ids else None)

    def _job_for(self, conv_id) -> int | None:
        return next((j for j, a in self.answers.items() if a.conversation_id == conv_id), None)

    # -- sending ----------------------------------------------------------
    def send(self, text: str):
        if not self.model_name:
            self.banner.show_message(
                "Choose a model first (⌘L), or open the Model Manager to get one.",
                "info", "Open Model Manager", self.open_model_manager,
            )
            return
        if self._job_for(self.conversation_id) is not None or self.pending is not None:
            return
        # Files that cannot be read keep their chip and its message; they hold nothing else back.
        files = [p for p in self.composer.attachments if p not in self.composer.failed_files()]
        editing = self.composer.editing
        stored = self._stored_documents(editing) if editing is not None else []
        try:
            if self.conversation_id is None:
                self.new_conversation()
        except FolioError as e:
            self.banner.show_message(str(e), "error")
            return
        conv_id = self.conversation_id
        if files or stored:
            # A second Send after "does not fit" takes the passages.
            passages_ok = self._offer == (conv_id, text, files)
            self._offer = None
            self._prepare(Pending(0, conv_id, text, files, stored, editing, passages_ok))
            return
        try:
            if editing is not None:
                self.store.delete_messages_from(conv_id, editing)
            user_id = self.store.add_message(conv_id, "user", text)
        except FolioError as e:
            # The text stays in the composer: nothing the user typed is lost.
            self.banner.show_message(str(e), "error")
            return
        self.composer.clear()
        self.open_conversation(conv_id)
        self.sidebar.refresh()
        self.start_answer(conv_id, user_id, (text, []))

    # -- documents --------------------------------------------------------
    def _values(self, conv) -> dict:
        """Preferences with the chat's overrides, and the larger context the chat took for its documents."""
        values = effective(self.settings, conv.settings if conv else None)
        wider = int((conv.settings or {}).get("context_length", 0)) if conv else 0
        if wider and values["context_length"] and wider > values["context_length"]:
            values["context_length"] = wider
        elif wider and not values["context_length"]:
            values["context_length"] = wider
        return values

    def _stored_documents(self, message_id: int) -> list[dict]:
        """An edited message's documents, from the store: they go with the new text."""
        for m in self.store.messages(self.conversation_id):
            if m.id == message_id:
                kinds = {d.get("attachment_id"): d.get("kind", "pdf") for d in m.stats.get("documents", [])}
                return [{"attachment_id": a.id, "name": a.file_name, "kind": kinds.get(a.id, "pdf"),
                         "sha256": a.sha256, "text": a.text} for a in m.attachments]
        return []

    def _prepare(self, p: Pending):
        """Ask the engine thread to read and plan the documents; the send completes in `_on_prepared`."""
        conv = self.store.get_conversation(p.conversation_id)
        values = self._values(conv)
        history = self._prompt(p.conversation_id, values, before=p.editing)
        messages = history + [{"role": "user", "content": p.text}]
        p.request = self.engine.prepare(p.conversation_id, messages, [*p.stored, *map(str, p.files)],
                                        values["kv_mode"], values["context_length"])
        self.pending = p
        self.composer.set_busy(True)
        self.stats.set_state("reading documents…")

    def _on_prepared(self, request: int, plan: dict):
        p = self.pending
        if p is None or p.request != request:
            return
        if not plan["fits"] and plan["larger_context"] and not p.passages_ok:
            # Not silently: say so with the numbers, offer the larger context, or passages on a second Send.
            self.pending = None
            self._settle_pending(p)
            names = ", ".join(d["name"] for d in plan["documents"] if d["mode"] != "full")
            self.banner.show_message(
                f"{names} does not fit whole. {plan['reason']} Send again for the most relevant passages only.",
                "warning", f"Use {plan['larger_context']:,} Tokens of Context",
                lambda n=plan["larger_context"], c=p.conversation_id: self._widen_context(c, n),
            )
            self._offer = (p.conversation_id, p.text, list(p.files))
            return
        self.pending = None
        self._commit(p, plan)

    def _widen_context(self, conv_id: int, tokens: int):
        conv = self.store.get_conversation(conv_id)
        self.store.update_conversation(conv_id, settings={**(conv.settings or {}), "context_length": tokens})
        self.banner.hide()
        self._offer = None
        if conv_id == self.conversation_id and self.composer.text().strip():
            self.composer.send()

    def _on_prepare_failed(self, request: int, reason: str):
        p = self.pending
        if p is None or p.request != request:
            return
        self.pending = None
        self._settle_pending(p)
        if reason:  # "" is a cancel: the composer still holds everything
            self.banner.show_message(reason, "error")

    def _settle_pending(self, p: Pending):
        if p.conversation_id == self.conversation_id:
            self.composer.set_busy(False)
        self.stats.set_state("idle" if not self.answers else "generating")

    def _commit(self, p: Pending, plan: dict):
        """Store the documents and the message, then answer. What the model read is kept with the
        message, so later turns send exactly the same prompt (and reuse its cache)."""
        conv_id = p.conversation_id
        try:
            known = {(a.file_name, a.sha256): a.id for a in self.store.attachments(conv_id)}
            ids, sent = [], []
            for d in plan["documents"]:
                att = known.get((d["name"], d["sha256"])) or self.store.add_attachment(
                    conv_id, d["name"], d["sha256"], d["pages"], d["text"], d["tokens"])
                ids.append(att)
                sent.append({"attachment_id": att, **{k: d[k] for k in ("name", "kind", "pages", "tokens", "mode", "passages")}})
            if p.editing is not None:
                self.store.delete_messages_from(conv_id, p.editing)
            user_id = self.store.add_message(conv_id, "user", p.text, attachment_ids=ids,
                                             stats={"documents": sent, "prompt": plan["message"]})
        except FolioError as e:
            self._settle_pending(p)
            self.banner.show_message(str(e), "error")
            return
        on_screen = conv_id == self.conversation_id
        if on_screen:
            self.composer.clear()
            self.composer.keep_only(self.composer.failed_files())
        self.open_conversation(self.conversation_id)
        self.sidebar.refresh()
        notes = [w for w in plan["warnings"] if "does not fit" in w or "passages" in w]
        if notes and on_screen:
            self.banner.show_message(" ".join(notes), "info")
        self.start_answer(conv_id, user_id, (p.text, list(p.files)))

    def _inspect_documents(self, paths: list):
        """Ask the engine thread what each attached document costs in this conversation."""
        if not paths:
            return
        conv = self.store.get_conversation(self.conversation_id) if self.conversation_id is not None else None
        values = self._values(conv)
        messages = self._prompt(conv.id, values) if conv else []
        self.engine.inspect_documents(paths, messages, values["kv_mode"], values["context_length"])

    def _prompt(self, conv_id: int, values: dict, before: int | None = None) -> list[dict]:
        messages = []
        if values["system_prompt"].strip():
            messages.append({"role": "system", "content": values["system_prompt"]})
        for m in self.store.messages(conv_id):
            if before is not None and m.id >= before:
                break
            if m.role == "system" or m.state in ("failed", "generating") or not m.content:
                continue
            # A message sent with documents: the model saw them planned into it.
            messages.append({"role": m.role, "content": m.stats.get("prompt") or m.content})
        return messages

    def start_answer(self, conv_id: int, user_message_id: int | None = None, draft: tuple = ()):
        conv = self.store.get_conversation(conv_id)
        values = self._values(conv)
        messages = self._prompt(conv_id, values)
        msg_id = self.store.begin_stream(conv_id)
        params = {
            "max_tokens": values["max_tokens"], "temperature": values["temperature"], "top_p": values["top_p"],
            "min_p": values["min_p"], "repetition_penalty": values["repetition_penalty"],
        }
        job = self.engine.generate(conv_id, messages, params, values["kv_mode"], values["context_length"])
        self.answers[job] = Answer(conv_id, msg_id, user_message_id=user_message_id, draft=draft)
        if self.model_info.get("model_id"):
            self.store.update_conversation(conv_id, model_id=self.model_info["model_id"])
        waiting = len(self.answers) > 1
        if conv_id == self.conversation_id:
            self.chat.transcript.append(Entry(msg_id, "assistant", "", "waiting" if waiting else "generating"))
            self.composer.set_busy(True)
        self.sidebar.busy.add(conv_id)
        return job

    def stop(self):
        job = self._job_for(self.conversation_id)
        if job is None and self.pending is not None and self.pending.conversation_id == self.conversation_id:
            job = self.pending.request
        if job is not None:
            self.engine.stop(job)
            self.stats.set_state("stopping…")
        elif self.composer.editing is not None:
            self.composer.end_edit()

    def regenerate(self, message_id: int | None):
        conv_id = self.conversation_id
        entries = self.chat.transcript.entries
        if conv_id is None or not entries or self._job_for(conv_id) is not None or not self.model_name:
            return
        last = entries[-1]
        if message_id is not None and message_id != last.id:
            return
        if last.role == "assistant":
            self.store.delete_messages_from(conv_id, last.id)
        self.open_conversation(conv_id)
        self.start_answer(conv_id)

    def edit_message(self, message_id: int):
        if self._job_for(self.conversation_id) is not None:
            return
        row = self.chat.transcript.row_of(message_id)
        if row >= 0:
            self.composer.begin_edit(message_id, self.chat.transcript.entries[row].content)

    # -- engine signals ---------------------------------------------------
    def _visible(self, job: int) -> Answer | None:
        a = self.answers.get(job)
        return a if a and a.conversation_id == self.conversation_id else None

    def _on_started(self, job: int):
        a = self._visible(job)
        if a:
            self.chat.transcript.update(a.message_id, state="generating")

    def _on_progress(self, job: int, done: int, total: int):
        a = self._visible(job)
        if a:
            self.stats.set_state("prefilling", done, total)
            self.chat.transcript.update(a.message_id, progress=(done, total))

    def _on_text(self, job: int, piece: str):
        a = self.answers.get(job)
        if a is None:
            return
        first = not a.text
        a.text += piece
        self.store.update_stream(a.message_id, a.text)
        if a.conversation_id == self.conversation_id:
            self.chat.transcript.update(a.message_id, append=piece, **({"progress": None} if first else {}))
            if first:
                self.stats.set_state("generating")

    def _on_notice(self, text: str):
        self.stats.flash(text, 8000)

    def _on_live(self, job: int, live: dict):
        if self._visible(job):
            self.stats.set_live(live)

    def _on_finished(self, job: int, text: str, stats: dict):
        a = self.answers.pop(job, None)
        if a is None:
            return
        reason = stats.get("finish_reason", "")
        self._settle(a)
        try:
            if reason == "cancelled" and not text:
                # Stopped before the first word (during the prefill): the conversation is as it was,
                # and what was sent goes back into the composer.
                self.store.delete_messages_from(a.conversation_id, a.user_message_id or a.message_id)
                if a.user_message_id is not None:
                    self._restore_draft(a)
            else:
                state = "stopped" if reason in ("stopped", "cancelled") else "complete"
                self.store.finish_message(a.message_id, text, state, stats)
        except FolioError as e:
            self.banner.show_message(str(e), "error")
        if stats.get("context_limit"):
            self.last_stats = stats
            self.stats.set_stats(stats)
        if a.conversation_id == self.conversation_id:
            self.open_conversation(a.conversation_id)
        self.sidebar.refresh()

    def _restore_draft(self, a: Answer):
        if a.conversation_id != self.conversation_id or not a.draft or self.composer.text().strip():
            return
        text, files = a.draft
        self.composer.input.setPlainText(text)
        self.composer.add_files(files)

    def _on_failed(self, job: int, reason: str):
        a = self.answers.pop(job, None)
        if a is None:
            self.banner.show_message(reason, "error")
            return
        self._settle(a)
        try:
            self.store.finish_message(a.message_id, a.text, "failed", {"error": reason})
        except FolioError as e:
            logger.warning("could not record a failure: %s", e)
        if a.conversation_id == self.conversation_id:
            self.open_conversation(a.conversation_id)
            self.banner.show_message(reason, "error")
        self.sidebar.refresh()

    def _settle(self, a: Answer):
        self.sidebar.busy.discard(a.conversation_id)
        self.stats.set_state("idle" if not self.answers else "generating")
        if a.conversation_id == self.conversation_id:
            self.composer.set_busy(False)

    # -- settings ---------------------------------------------------------
    def edit_preferences(self):
        dialog = PreferencesDialog(self.settings, self)
        if dialog.exec():
            changed = dialog.apply()
            if "appearance" in changed:
                theme.apply(QGuiApplication.instance(), changed["appearance"])
                self.chat.viewport().update()

    def edit_chat_settings(self):
        if self.conversation_id is None:
            return
        conv = self.store.get_conversation(self.conversation_id)
        dialog = ConversationSettingsDialog(self.settings, conv.settings or {}, self)
        if dialog.exec():
            keep = {k: v for k, v in (conv.settings or {}).items() if k not in CONVERSATION_OVERRIDES}
            self.store.update_conversation(self.conversation_id, settings={**keep, **dialog.overrides()})

    def _restore_geometry(self):
        geometry = self.window_state.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1100, 720)
        splitter = self.window_state.value("splitter")
        if splitter is not None:
            self.splitter.restoreState(splitter)

    # -- menu actions -----------------------------------------------------
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
        def version(pkg):
            try:
                return importlib.metadata.version(pkg)
            except importlib.metadata.PackageNotFoundError:
                return "not installed"

        import psutil

        s = self.last_stats
        lines = [
            f"Folio {__version__}",
            f"Python {platform.python_version()} on {platform.platform()} ({platform.machine()})",
            "Packages: " + ", ".join(f"{p} {version(p)}" for p in ("mlx", "mlx-lm", "PySide6-Essentials", "huggingface_hub")),
            f"Backend: {self.model_info.get('backend', 'not loaded yet')}",
            f"Memory: RSS {psutil.Process().memory_info().rss / 1e9:.2f} GB, total {psutil.virtual_memory().total / 1e9:.1f} GB"
            + (f", MLX active {s.get('active_memory_bytes', 0) / 1e9:.2f} GB, peak {s.get('peak_memory_bytes', 0) / 1e9:.2f} GB" if s else ""),
            f"Model: {self.model_info.get('model_id', 'none')} ({self.model_info.get('path', '')})",
            f"KV mode: {self.settings.kv_mode} (last turn: {s.get('kv_policy', '-')}), context {self.settings.context_length or 'model max'}",
            f"Data: {paths.data_dir()}",
            f"Log: {log.log_file()}",
        ]
        return "\n".join(lines)

    def copy_diagnostics(self):
        QGuiApplication.clipboard().setText(self.diagnostics())
        self.stats.flash("Diagnostics copied: paste them into your bug report", 4000)

    def about(self):
        QMessageBox.about(
            self, "About Folio",
            f"<b>Folio {__version__}</b><p>Private, offline, long-context chat with local models. "
            "Everything stays on this computer.</p>",
        )

    # -- first run ----------------------------------------------------------
    def show_welcome_if_first_run(self) -> bool:
        """The welcome screen in place of the chat, until the user opens the model manager or dismisses it."""
        from app.ui import welcome

        if not welcome.should_show(self.settings):
            return False
        self.welcome = welcome.WelcomeScreen(self.settings)
        self.welcome.openModelManager.connect(self._welcome_chose)
        self.welcome.dismissed.connect(self._end_welcome)
        self.pages.addWidget(self.welcome)
        self.pages.setCurrentWidget(self.welcome)
        self.welcome.open_button.setFocus()
        return True

    def _end_welcome(self):
        if self.welcome is not None:
            self.pages.setCurrentWidget(self.chat_page)
            self.pages.removeWidget(self.welcome)
            self.welcome.deleteLater()
            self.welcome = None
        self.composer.input.setFocus()

    def _welcome_chose(self, repo_id: str):
        self._end_welcome()
        manager = self.open_model_manager()
        if manager is not None and repo_id:
            manager.focus_model(repo_id)

    # -- window -----------------------------------------------------------
    def attach_files(self, files):
        """Attach files to the chat on screen (drops anywhere in the window, the Dock icon, Finder)."""
        if self.welcome is not None:
            self._end_welcome()
        self.composer.add_files([Path(f) for f in files])

    def eventFilter(self, obj, event):
        if event.type() == QEvent.FileOpen and obj is QApplication.instance():
            path = event.file() or event.url().toLocalFile()
            if path:
                self.attach_files([path])
                self.raise_()
                self.activateWindow()
                return True
        return super().eventFilter(obj, event)

    def dragEnterEvent(self, event):
        if any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event):
        if any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event):
        files = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if files:
            event.acceptProposedAction()
            self.attach_files(files)

    def closeEvent(self, event):
        QApplication.instance().removeEventFilter(self)
        if self._manager is not None:
            self._manager.close()  # pauses its downloads and waits for its threads
        self.window_state.setValue("geometry", self.saveGeometry())
        self.window_state.setValue("splitter", self.splitter.saveState())
        self.window_state.sync()
        self.engine.shutdown()
        # The worker stopped mid-answer: keep what it wrote, marked stopped.
        for a in self.answers.values():
            try:
                self.store.finish_message(a.message_id, a.text, "stopped", {"finish_reason": "stopped"})
            except FolioError as e:
                logger.warning("could not save a stopped answer: %s", e)
        self.answers.clear()
        super().closeEvent(event)

