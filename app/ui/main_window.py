"""The main window: sidebar, transcript, composer, model picker, stats bar and the menus.

It is the one place that ties the store (what was said), the engine worker (what the model
says next) and the widgets together. Every answer is a job: the store gets its text as it
streams, the transcript only when its conversation is the one on screen. The parts live in
their own modules (answers, send_documents, model_picker, menus) and are mixed in here.
"""

from pathlib import Path

from PySide6.QtCore import QEvent, QSettings
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication, QMainWindow, QSplitter, QStackedWidget, QVBoxLayout, QWidget

from app import log, paths
from app.engine.errors import FolioError
from app.settings import CONVERSATION_OVERRIDES
from app.ui import theme
from app.ui.answers import Answer, Answers
from app.ui.banner import Banner
from app.ui.chat_view import ChatView, entry_from_message
from app.ui.composer import Composer
from app.ui.menus import Menus
from app.ui.model_picker import ModelPicker
from app.ui.send_documents import DocumentSending, Pending
from app.ui.settings_dialog import ConversationSettingsDialog, PreferencesDialog, effective
from app.ui.sidebar import Sidebar
from app.ui.stats_bar import StatsBar
from app.ui.undo_delete import UndoableDelete
from app.ui.worker import Engine

logger = log.get("ui")


class MainWindow(Answers, DocumentSending, ModelPicker, Menus, QMainWindow):
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

        self.deletion = UndoableDelete(self)
        self.deletion.expired.connect(self._delete_for_real)
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

    def _connect_engine(self):
        w = self.engine.worker
        w.loading.connect(self._on_loading)
        w.loadProgress.connect(self._on_load_progress)
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
        """Hide the chat at once; the store deletes it when the undo window passes (or on quit)."""
        job = self._job_for(conv_id)
        if job is not None:
            self.engine.stop(job)
            a = self.answers.pop(job)
            self._settle(a)
            self._keep_stopped(a)
        title = self.store.get_conversation(conv_id).title
        self.deletion.start(conv_id)
        self.sidebar.hidden.add(conv_id)
        self.sidebar.refresh()
        if conv_id == self.conversation_id:
            ids = self.sidebar.conversation_ids()
            self.open_conversation(ids[0] if ids else None)
        self.actions_by_name["undo_delete"].setEnabled(True)
        self.banner.show_message(f"Deleted “{title}”.", "info", "Undo", self.undo_delete)

    def undo_delete(self):
        conv_id = self.deletion.undo()
        self.actions_by_name["undo_delete"].setEnabled(False)
        if conv_id is None:
            return
        self.sidebar.hidden.discard(conv_id)
        self.banner.hide()
        self.sidebar.search.clear()
        self.sidebar.refresh()
        self.open_conversation(conv_id)

    def _delete_for_real(self, conv_id: int):
        self.actions_by_name["undo_delete"].setEnabled(False)
        try:
            self.store.delete_conversation(conv_id)
        except FolioError as e:
            self.banner.show_message(f"Could not delete the chat: {e}", "error")
            return
        finally:
            self.sidebar.hidden.discard(conv_id)
        self.engine.forget(conv_id)
        if self.banner.text().startswith("Deleted “"):
            self.banner.hide()

    def _keep_stopped(self, a: Answer):
        """An answer cut off by quitting or deleting: keep what it wrote, marked stopped (undo brings it back)."""
        try:
            self.store.finish_message(a.message_id, a.text, "stopped", {"finish_reason": "stopped"})
        except FolioError as e:
            logger.warning("could not save a stopped answer: %s", e)
        self.sidebar.busy.discard(a.conversation_id)

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

    # -- what the model reads --------------------------------------------
    def _values(self, conv) -> dict:
        """Preferences with the chat's overrides, and the larger context the chat took for its documents."""
        values = effective(self.settings, conv.settings if conv else None)
        wider = int((conv.settings or {}).get("context_length", 0)) if conv else 0
        if wider and values["context_length"] and wider > values["context_length"]:
            values["context_length"] = wider
        elif wider and not values["context_length"]:
            values["context_length"] = wider
        return values
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
            self._keep_stopped(a)
        self.answers.clear()
        # Quitting during the undo window completes the delete.
        self.deletion.finish()
        super().closeEvent(event)
