"""First run and the model picker: the welcome screen in the window, the model manager, models listed through app.hub."""

import shutil

import pytest
from PySide6.QtCore import Qt

from app.hub import net
from app.settings import Settings
from app.ui.model_manager import ModelManagerWindow

pytest.register_assert_rewrite("ui_helpers")
from ui_helpers import WAIT, close_window, open_window  # noqa: E402


def open_listed(qtbot, settings=None):
    """The window once the engine thread has listed the installed models."""
    window = open_window(qtbot, settings=settings)
    qtbot.waitUntil(lambda: window.picker.property("listed") is True, timeout=WAIT)
    return window


def in_hf_cache(model, repo_id: str):
    """`model` laid out as huggingface_hub leaves a finished download: blobs, a snapshot, refs/main."""
    root = net.hub_cache() / ("models--" + repo_id.replace("/", "--"))
    snapshot = root / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir()
    for f in model.iterdir():
        blob = root / "blobs" / f.name
        shutil.copy(f, blob)
        (snapshot / f.name).symlink_to(blob)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("0" * 40)


def test_the_welcome_screen_leads_to_the_model_manager_on_the_suggestion(qtbot):
    window = open_listed(qtbot)
    assert window.show_welcome_if_first_run()
    welcome = window.welcome
    assert window.pages.currentWidget() is welcome and welcome.isVisible() and not window.chat.isVisible()
    suggestion = welcome.suggestion
    qtbot.mouseClick(welcome.open_button, Qt.LeftButton)
    assert window.pages.currentWidget() is window.chat_page and window.welcome is None
    manager = window._manager
    assert isinstance(manager, ModelManagerWindow) and manager.isVisible()
    if suggestion is not None:  # the catalog has a model for this machine's memory: it is selected
        assert manager.tabs.currentIndex() == 1
        row = manager.catalog_table.currentRow()
        assert manager.catalog_table.item(row, 0).data(Qt.UserRole) == suggestion.repo_id
    # The first run is over: the next start goes straight to the chat.
    assert Settings().first_run_done and not window.show_welcome_if_first_run()
    close_window(window)


def test_not_now_goes_to_the_chat_and_a_dropped_file_ends_the_welcome_too(qtbot, tmp_path):
    window = open_listed(qtbot)
    window.show_welcome_if_first_run()
    qtbot.mouseClick(window.welcome.later_button, Qt.LeftButton)
    assert window.pages.currentWidget() is window.chat_page and window._manager is None
    close_window(window)

    window = open_listed(qtbot, Settings())
    Settings().set("first_run_done", False)
    window.settings = Settings()
    assert window.show_welcome_if_first_run()
    note = tmp_path / "note.txt"
    note.write_text("hello")
    window.attach_files([note])
    assert window.pages.currentWidget() is window.chat_page and window.composer.attachments == [note]
    close_window(window)


def test_the_picker_lists_cache_and_imported_models_through_the_hub(qtbot, model_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    # huggingface_hub reads HF_HOME once, at import, maybe in an earlier test: point it at this test's cache.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(net.hub_cache()))
    in_hf_cache(model_dir("llama"), "org/tiny-llama")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    settings = Settings()
    settings.set("imported_models", [str(broken)])
    window = open_listed(qtbot, settings)
    items = {window.picker.itemData(i): i for i in range(window.picker.count())}
    assert "org/tiny-llama" in items and str(broken) in items
    # A folder the loader would refuse is shown, greyed out, with the reason as its tooltip.
    row = items[str(broken)]
    assert not window.picker.model().item(row).isEnabled()
    assert "no weights" in window.picker.itemData(row, Qt.ToolTipRole)
    assert window.picker.model().item(items["org/tiny-llama"]).isEnabled()
    assert "No model is installed" not in window.banner.text()

    window.picker.setCurrentIndex(items["org/tiny-llama"])
    window.picker.activated.emit(items["org/tiny-llama"])
    qtbot.waitUntil(lambda: window.model_info.get("name") == "org/tiny-llama", timeout=WAIT)
    # The remembered model is chosen again on the next start, once the list is in.
    close_window(window)
    again = open_listed(qtbot, Settings())
    qtbot.waitUntil(lambda: again.model_info.get("name") == "org/tiny-llama", timeout=WAIT)
    close_window(again)


def test_the_picker_follows_imports_and_deletions_in_the_model_manager(qtbot, model_dir, tmp_path):
    window = open_listed(qtbot)
    assert window.models == [] and window.picker.itemText(0) == "No model installed"
    folder = tmp_path / "my-model"
    shutil.copytree(model_dir("llama"), folder)
    manager = window.open_model_manager()
    manager.import_folder(str(folder))
    qtbot.waitUntil(lambda: window.picker.findData(str(folder.resolve())) >= 0, timeout=WAIT)
    assert window.picker.itemText(0) == "my-model" and not window.banner.text().startswith("No model")

    manager.delete(str(folder.resolve()), confirm=False)
    qtbot.waitUntil(lambda: window.picker.findData(str(folder.resolve())) < 0, timeout=WAIT)
    assert window.picker.itemText(0) == "No model installed" and "No model is installed" in window.banner.text()
    close_window(window)
