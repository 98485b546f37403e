"""The toolbar's model picker: installed models listed through the engine thread, loading, the model manager."""

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QFileDialog, QLabel, QMessageBox, QPushButton, QToolBar, QWidget

from app import log

logger = log.get("ui")

MANAGER = "__manager__"


class ModelPicker:
    """Mixed into MainWindow: the picker (`self.picker`), `model_name` requested, `model_info` loaded."""

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

    def _on_load_progress(self, name: str, fraction: float):
        self.stats.set_state(f"loading {fraction:.0%}")

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
