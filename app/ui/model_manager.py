"""The model manager window: installed models, the curated catalog, Hub search, downloads, fit estimate.

Everything slow (scans, searches, downloads, the fit estimate, deletes) runs in a `Job`, a
QThread with one shape: work, then `succeeded` or `failed`, with optional `progressed`
(Anki's QueryOp). Widgets are touched only in the slots, on the UI thread. No mlx import here:
the hub code reads the engine's byte costs lazily, inside the job.
"""

import sys

from PySide6.QtCore import QThread, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMessageBox,
    QProgressBar, QPushButton, QSpinBox, QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget,
)

from app import log
from app.engine.errors import FolioError
from app.hub import catalog, download, installed, search
from app.hub.errors import DownloadCancelled, HubError, Paused
from app.units import duration, fmt, tokens_label

logger = log.get("ui.models")

VERDICT_COLORS = {"fits": "#2e7d32", "tight": "#b26a00", "won't fit": "#c62828"}


class Job(QThread):
    """Runs fn(report) off the UI thread; report(x) emits progressed(x)."""

    progressed = Signal(object)
    succeeded = Signal(object)
    failed = Signal(object)  # the exception: its str() is the message

    def __init__(self, fn, parent=None):
        super().__init__(parent)
        self.fn = fn

    def run(self):
        try:
            result = self.fn(self.progressed.emit)
        except FolioError as e:
            self.failed.emit(e)
        except Exception as e:  # every failure reaches a handler; unexpected ones are logged in full
            logger.exception("model manager job failed")
            self.failed.emit(FolioError(f"Something went wrong ({type(e).__name__}: {e}); details are in the log."))
        else:
            self.succeeded.emit(result)


def _table(headers: list[str]) -> QTableWidget:
    t = QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(headers)
    t.setSelectionBehavior(QAbstractItemView.SelectRows)
    t.setSelectionMode(QAbstractItemView.SingleSelection)
    t.setEditTriggers(QAbstractItemView.NoEditTriggers)
    t.verticalHeader().setVisible(False)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
    t.horizontalHeader().setStretchLastSection(True)
    return t


def _fill(table: QTableWidget, rows: list[list], keys: list[str]):
    table.setRowCount(0)
    for r, (row, key) in enumerate(zip(rows, keys)):
        table.insertRow(r)
        for c, value in enumerate(row):
            item = QTableWidgetItem(str(value))
            item.setData(Qt.UserRole, key)
            table.setItem(r, c, item)


def _selected_key(table: QTableWidget):
    items = table.selectedItems()
    return items[0].data(Qt.UserRole) if items else None


class ModelManagerWindow(QWidget):
    """Emits modelChosen(name) with a repo id or folder path the loader accepts."""

    modelChosen = Signal(str)
    installedChanged = Signal(list)  # Installed.as_dict() per model, after every refresh of the list

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowFlag(Qt.Window)
        self.setWindowTitle("Model Manager")
        self.setObjectName("modelManager")
        self.resize(980, 680)
        self._jobs = set()
        self._downloads = {}  # repo id -> {"control", "job", "row state"}
        self._installed = {}
        self._fit_target = None
        self._fit_pending = None
        self._remote = {}  # repo id -> (config, weights bytes) of search results already asked about
        try:
            self._catalog = {e.repo_id: e for e in catalog.load()}
        except HubError as e:
            self._catalog = {}
            logger.warning("%s", e)

        self.tabs = QTabWidget()
        self.tabs.addTab(self._installed_tab(), "On this Mac" if sys.platform == "darwin" else "Installed")
        self.tabs.addTab(self._catalog_tab(), "Catalog")
        self.tabs.addTab(self._search_tab(), "Search the Hub")
        self.tabs.addTab(self._downloads_tab(), "Downloads")

        self.status = QLabel("")
        self.status.setObjectName("modelManagerStatus")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs, 3)
        layout.addWidget(self._fit_panel(), 2)
        layout.addWidget(self.status)

        self._fill_catalog()
        for d in download.pending():
            self._download_row(d["repo_id"], d["done_bytes"], d["total_bytes"],
                               "Failed: " + d["error"] if d["state"] == "failed" else "Paused")
        self.refresh()

    # ---- tabs -------------------------------------------------------------------------

    def _installed_tab(self) -> QWidget:
        self.installed_table = _table(["Model", "Source", "Size on disk", "Status"])
        self.installed_table.itemSelectionChanged.connect(self._installed_selected)
        self.installed_table.itemDoubleClicked.connect(lambda *_: self.use_selected())
        self.use_button = QPushButton("Use This Model")
        self.use_button.clicked.connect(self.use_selected)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.clicked.connect(lambda: self.delete(_selected_key(self.installed_table)))
        import_button = QPushButton("Import Folder…")
        import_button.clicked.connect(self._choose_folder)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        self.use_button.setEnabled(False)
        self.delete_button.setEnabled(False)
        return self._page(self.installed_table, [self.use_button, self.delete_button, import_button, refresh])

    def _catalog_tab(self) -> QWidget:
        self.catalog_table = _table(["Model", "Size", "Quantization", "Download", "Context", "License", "Description"])
        self.catalog_table.itemSelectionChanged.connect(self._catalog_selected)
        self.catalog_download = QPushButton("Download")
        self.catalog_download.clicked.connect(lambda: self.download(_selected_key(self.catalog_table)))
        return self._page(self.catalog_table, [self.catalog_download])

    def _search_tab(self) -> QWidget:
        self.search_box = QLineEdit()
        self.search_box.setPlaceholderText("Search MLX models on the Hugging Face Hub, e.g. qwen3 4bit")
        self.search_box.returnPressed.connect(lambda: self.search(self.search_box.text()))
        self.search_button = QPushButton("Search")
        self.search_button.clicked.connect(lambda: self.search(self.search_box.text()))
        self.search_table = _table(["Model", "Downloads", "Likes", "Quantization", "Updated"])
        self.search_table.itemSelectionChanged.connect(self._search_selected)
        self.search_download = QPushButton("Download")
        self.search_download.clicked.connect(lambda: self.download(_selected_key(self.search_table)))
        page = self._page(self.search_table, [self.search_download])
        row = QHBoxLayout()
        row.addWidget(self.search_box)
        row.addWidget(self.search_button)
        page.layout().insertLayout(0, row)
        return page

    def _downloads_tab(self) -> QWidget:
        self.downloads_table = _table(["Model", "Progress", "Status"])
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(lambda: self.pause(_selected_key(self.downloads_table)))
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(lambda: self.download(_selected_key(self.downloads_table)))
        self.cancel_button = QPushButton("Cancel Download")
        self.cancel_button.clicked.connect(lambda: self.cancel(_selected_key(self.downloads_table)))
        return self._page(self.downloads_table, [self.pause_button, self.resume_button, self.cancel_button])

    def _page(self, table, buttons) -> QWidget:
        page = QWidget()
        v = QVBoxLayout(page)
        v.addWidget(table)
        row = QHBoxLayout()
        for b in buttons:
            row.addWidget(b)
        row.addStretch(1)
        v.addLayout(row)
        return page

    def _fit_panel(self) -> QWidget:
        panel = QWidget()
        v = QVBoxLayout(panel)
        self.fit_title = QLabel("Select a model to see whether it fits on this computer.")
        self.fit_title.setObjectName("fitTitle")
        self.context_box = QSpinBox()
        self.context_box.setRange(0, 10_000_000)
        self.context_box.setSingleStep(4096)
        self.context_box.setSpecialValueText("model maximum")
        self.context_box.setSuffix(" tokens")
        self.context_box.valueChanged.connect(lambda *_: self._estimate())
        top = QHBoxLayout()
        top.addWidget(self.fit_title, 1)
        top.addWidget(QLabel("Context:"))
        top.addWidget(self.context_box)
        self.fit_table = _table(["KV cache", "Memory needed", "Verdict", "Longest context that fits"])
        self.fit_summary = QLabel("")
        self.fit_summary.setObjectName("fitSummary")
        self.fit_summary.setStyleSheet("font-weight: 600;")
        v.addLayout(top)
        v.addWidget(self.fit_table)
        v.addWidget(self.fit_summary)
        return panel

    # ---- jobs -------------------------------------------------------------------------

    def _run(self, fn, on_ok=None, on_fail=None, on_progress=None) -> Job:
        job = Job(fn, self)
        self._jobs.add(job)
        if on_progress:
            job.progressed.connect(on_progress)
        job.succeeded.connect(on_ok or (lambda _: None))
        job.failed.connect(on_fail or self._show_error)
        job.finished.connect(lambda: self._jobs.discard(job))
        job.start()
        return job

    def _show_error(self, e):
        self.status.setText(str(e))

    def busy(self) -> bool:
        return bool(self._jobs)

    # ---- installed --------------------------------------------------------------------

    def refresh(self):
        self._run(lambda report: installed.list_models(), self._fill_installed)

    def _fill_installed(self, models):
        self._installed = {m.name: m for m in models}
        rows = [[m.name, "Hugging Face cache" if m.source == "hub" else "imported folder", fmt(m.size_bytes),
                 m.problem or "Ready"] for m in models]
        _fill(self.installed_table, rows, [m.name for m in models])
        self.installedChanged.emit([m.as_dict() for m in models])
        if not models and not self.status.text():
            self.status.setText("No models yet: pick one in the Catalog tab, search the Hub, or import a folder.")

    def _installed_selected(self):
        m = self._installed.get(_selected_key(self.installed_table))
        self.use_button.setEnabled(bool(m) and not m.problem)
        self.delete_button.setEnabled(bool(m))
        if m and m.config and not m.problem:
            self._set_fit_target(m.name, m.config, m.weights_bytes)

    def use_selected(self):
        m = self._installed.get(_selected_key(self.installed_table))
        if m is None:
            return
        if m.problem:
            self.status.setText(m.problem)
            return
        self.modelChosen.emit(m.name)

    def delete(self, name, confirm: bool = True):
        m = self._installed.get(name)
        if m is None:
            return
        if confirm:
            what = ("delete its files" if m.source == "hub" else "forget it (the folder stays on disk)")
            answer = QMessageBox.question(self, "Delete Model", f"Remove {name} and {what}?")
            if answer != QMessageBox.Yes:
                return
        self._run(lambda report: installed.remove(name), self._removed)

    def _removed(self, message):
        self.status.setText(message)
        self.refresh()

    def _choose_folder(self):
        folder = QFileDialog.getExistingDirectory(self, "Import Model Folder")
        if folder:
            self.import_folder(folder)

    def import_folder(self, folder: str):
        self._run(lambda report: installed.import_folder(folder), self._imported)

    def _imported(self, m):
        self.status.setText(f"Imported {m.path}.")
        self.refresh()

    # ---- catalog and search -----------------------------------------------------------

    def _fill_catalog(self):
        entries = list(self._catalog.values())
        rows = [[e.name, e.parameters, e.quantization, fmt(e.download_bytes), tokens_label(e.context_length),
                 e.license, e.description] for e in entries]
        _fill(self.catalog_table, rows, [e.repo_id for e in entries])

    def _catalog_selected(self):
        e = self._catalog.get(_selected_key(self.catalog_table))
        if e:
            self._set_fit_target(e.name, e.config, e.download_bytes)

    def focus_model(self, repo_id: str):
        """Show a catalog model (the welcome screen's suggestion) selected, with its fit."""
        for r in range(self.catalog_table.rowCount()):
            if self.catalog_table.item(r, 0).data(Qt.UserRole) == repo_id:
                self.tabs.setCurrentIndex(1)
                self.catalog_table.selectRow(r)
                return

    def search(self, text: str):
        text = text.strip()
        if not text:
            self.status.setText("Type a few words to search for, e.g. qwen3 4bit.")
            return
        self.search_button.setEnabled(False)
        self.status.setText(f"Searching the Hub for {text!r}…")

        def done(results):
            self.search_button.setEnabled(True)
            _fill(self.search_table, [[r.repo_id, f"{r.downloads:,}", r.likes, r.quantization or "-", r.last_modified]
                                      for r in results], [r.repo_id for r in results])
            self.status.setText(f"{len(results)} MLX models match {text!r}." if results else f"No MLX models match {text!r}.")

        def fail(e):
            self.search_button.setEnabled(True)
            self._show_error(e)

        self._run(lambda report: search.search(text), done, fail)

    def _search_selected(self):
        repo_id = _selected_key(self.search_table)
        if not repo_id:
            return
        if repo_id in self._remote:
            self._set_fit_target(repo_id, *self._remote[repo_id])
            return
        self.fit_title.setText(f"Fit on this computer: {repo_id} (asking the Hub for its size and config…)")
        self.fit_table.setRowCount(0)
        self.fit_summary.setText("")

        def done(found):
            self._remote[repo_id] = found
            if _selected_key(self.search_table) == repo_id:  # the user may have moved on meanwhile
                self._set_fit_target(repo_id, *found)

        def fail(e):
            if _selected_key(self.search_table) == repo_id:
                self.fit_title.setText(f"Fit on this computer: {repo_id}")
                self.fit_summary.setText(str(e))

        self._run(lambda report: search.details(repo_id), done, fail)

    # ---- downloads --------------------------------------------------------------------

    def _download_row(self, repo_id, done, total, state) -> int:
        for r in range(self.downloads_table.rowCount()):
            if self.downloads_table.item(r, 0).data(Qt.UserRole) == repo_id:
                break
        else:
            r = self.downloads_table.rowCount()
            self.downloads_table.insertRow(r)
            item = QTableWidgetItem(repo_id)
            item.setData(Qt.UserRole, repo_id)
            self.downloads_table.setItem(r, 0, item)
            bar = QProgressBar()
            bar.setRange(0, 1000)
            self.downloads_table.setCellWidget(r, 1, bar)
            status = QTableWidgetItem("")
            status.setData(Qt.UserRole, repo_id)
            self.downloads_table.setItem(r, 2, status)
        self.downloads_table.cellWidget(r, 1).setValue(int(1000 * done / total) if total else 0)
        self.downloads_table.item(r, 2).setText(f"{fmt(done)} of {fmt(total)} — {state}" if total else state)
        return r

    def _drop_row(self, repo_id):
        for r in range(self.downloads_table.rowCount()):
            if self.downloads_table.item(r, 0).data(Qt.UserRole) == repo_id:
                self.downloads_table.removeRow(r)
                return

    def download_state(self, repo_id) -> str:
        for r in range(self.downloads_table.rowCount()):
            if self.downloads_table.item(r, 0).data(Qt.UserRole) == repo_id:
                return self.downloads_table.item(r, 2).text()
        return ""

    def download(self, repo_id):
        """Start, or resume, downloading `repo_id`."""
        if not repo_id or repo_id in self._downloads:
            return
        control = download.Control()
        self._download_row(repo_id, 0, 0, "Checking the Hub…")
        self.tabs.setCurrentIndex(3)

        def progress(p):
            speed = f"{fmt(p.speed_bps)}/s" if p.speed_bps > 0 else "starting"
            self._download_row(repo_id, p.done_bytes, p.total_bytes, f"{speed}, {duration(p.eta_s)} left")

        def ok(snapshot):
            self._downloads.pop(repo_id, None)
            self._drop_row(repo_id)
            self.status.setText(f"{repo_id} is installed and verified.")
            self.refresh()

        def fail(e):
            self._downloads.pop(repo_id, None)
            if isinstance(e, DownloadCancelled):
                self._drop_row(repo_id)
            else:
                self._download_row(repo_id, *self._pending_bytes(repo_id), "Paused" if isinstance(e, Paused) else f"Failed: {e}")
            self.status.setText(str(e))

        job = self._run(lambda report: download.pull(repo_id, on_progress=report, control=control), ok, fail, progress)
        self._downloads[repo_id] = {"control": control, "job": job}

    def _pending_bytes(self, repo_id):
        for d in download.pending():
            if d["repo_id"] == repo_id:
                return d["done_bytes"], d["total_bytes"]
        return 0, 0

    def pause(self, repo_id):
        if repo_id in self._downloads:
            self._downloads[repo_id]["control"].pause()

    def cancel(self, repo_id):
        if not repo_id:
            return
        if repo_id in self._downloads:
            self._downloads[repo_id]["control"].cancel()
            return

        def done(_):
            self._drop_row(repo_id)
            self.status.setText(f"Cancelled the download of {repo_id}; its partial files were deleted.")

        self._run(lambda report: download.cancel_pending(repo_id), done)

    # ---- fit --------------------------------------------------------------------------

    def _set_fit_target(self, label, config, weights_bytes):
        self._fit_target = (label, config, weights_bytes)
        self.fit_title.setText(f"Fit on this computer: {label} ({fmt(weights_bytes)} of weights)")
        self._estimate()

    def _estimate(self):
        if self._fit_target is None:
            return
        if any(getattr(j, "is_fit", False) for j in self._jobs):
            self._fit_pending = True  # one estimate at a time; the newest request runs next
            return
        from app.hub import fit

        label, config, weights = self._fit_target
        context = self.context_box.value() or None
        job = self._run(lambda report: fit.estimate(config, weights, context=context), self._show_fit, self._fit_failed)
        job.is_fit = True
        job.finished.connect(self._next_estimate)

    def _next_estimate(self):
        if self._fit_pending:
            self._fit_pending = None
            self._estimate()

    def _fit_failed(self, e):
        self.fit_table.setRowCount(0)
        self.fit_summary.setText(str(e))

    def _show_fit(self, est):
        names = {"fp16": "fp16 (plain)", "int4": "int4 (Folio)", "auto": "auto (int4, some layers higher)"}
        rows = [[names.get(m.mode, m.mode), fmt(m.need_bytes), m.verdict, f"{m.max_context:,} tokens"] for m in est.modes]
        _fill(self.fit_table, rows, [m.mode for m in est.modes])
        for r, m in enumerate(est.modes):
            self.fit_table.item(r, 2).setData(Qt.ForegroundRole, _color(m.verdict))
        self.fit_summary.setText(
            f"At {est.context:,} tokens, against {fmt(est.budget_bytes)} usable by the GPU "
            f"({fmt(est.total_bytes)} total): {est.summary()}."
        )

    # ---- closing ----------------------------------------------------------------------

    def closeEvent(self, event):
        # Downloads pause (they resume next time); no thread may outlive the window.
        for d in self._downloads.values():
            d["control"].pause()
        for job in list(self._jobs):
            job.wait(10_000)
        super().closeEvent(event)


def _color(verdict: str):
    from PySide6.QtGui import QBrush, QColor

    return QBrush(QColor(VERDICT_COLORS.get(verdict, "#000000")))
