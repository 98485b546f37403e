"""The model manager window driven through its widgets against a local Hub."""

import shutil

import pytest
from hub_server import HubServer, point_hub_at
from PySide6.QtCore import Qt

from app.hub import download
from app.ui.model_manager import ModelManagerWindow

REPO = "mlx-community/tiny-llama-4bit"


@pytest.fixture
def hub(monkeypatch, model_dir):
    with HubServer({REPO: model_dir("llama")}) as server:
        point_hub_at(monkeypatch, server)
        yield server


@pytest.fixture
def window(qtbot):
    windows = []

    def make():
        w = ModelManagerWindow()
        qtbot.addWidget(w)
        w.show()
        qtbot.waitUntil(lambda: not w.busy(), timeout=20_000)
        windows.append(w)
        return w

    yield make
    for w in windows:
        w.close()


def rows(table, col=0):
    return [table.item(r, col).text() for r in range(table.rowCount())]


def test_catalog_shows_models_and_fit(window, qtbot):
    w = window()
    assert "Qwen3 8B" in rows(w.catalog_table) and w.catalog_table.rowCount() >= 6
    w.focus_model("mlx-community/Meta-Llama-3.1-8B-Instruct-4bit")
    qtbot.waitUntil(lambda: w.fit_table.rowCount() == 3, timeout=20_000)
    assert rows(w.fit_table)[0].startswith("fp16") and "with int4" in w.fit_summary.text()
    assert rows(w.fit_table, 2)[1] in ("fits", "tight", "won't fit")
    w.context_box.setValue(8192)
    qtbot.waitUntil(lambda: "8,192 tokens" in w.fit_summary.text(), timeout=20_000)


def test_search_download_use_delete(window, qtbot, hub, monkeypatch):
    w = window()
    w.search_box.setText("tiny")
    qtbot.mouseClick(w.search_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: w.search_table.rowCount() == 1, timeout=10_000)
    assert rows(w.search_table) == [REPO]
    w.search_table.selectRow(0)
    qtbot.mouseClick(w.search_download, Qt.LeftButton)
    qtbot.waitUntil(lambda: REPO in rows(w.installed_table), timeout=20_000)
    assert "installed and verified" in w.status.text() and w.downloads_table.rowCount() == 0

    w.installed_table.selectRow(0)
    assert w.use_button.isEnabled()
    with qtbot.waitSignal(w.modelChosen, timeout=5_000) as chosen:
        qtbot.mouseClick(w.use_button, Qt.LeftButton)
    assert chosen.args == [REPO]

    from PySide6.QtWidgets import QMessageBox

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
    qtbot.mouseClick(w.delete_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: w.installed_table.rowCount() == 0 and not w.busy(), timeout=10_000)
    assert "freed" in w.status.text()


def test_a_search_result_gets_a_fit_estimate_before_download(window, qtbot, hub, model_dir):
    w = window()
    w.search("tiny")
    qtbot.waitUntil(lambda: w.search_table.rowCount() == 1, timeout=10_000)
    w.search_table.selectRow(0)
    qtbot.waitUntil(lambda: w.fit_table.rowCount() == 3, timeout=20_000)
    weights = sum(f.stat().st_size for f in model_dir("llama").glob("model*.safetensors"))
    from app.units import fmt

    assert REPO in w.fit_title.text() and fmt(weights) in w.fit_title.text()
    assert rows(w.fit_table, 2)[1] in ("fits", "tight", "won't fit")
    assert w.installed_table.rowCount() == 0  # nothing was downloaded
    qtbot.waitUntil(lambda: not w.busy(), timeout=10_000)


def test_pause_survives_a_restart_and_resumes(window, qtbot, hub):
    hub.throttle = 0.003
    w = window()
    w.download(REPO)
    qtbot.waitUntil(lambda: "left" in w.download_state(REPO), timeout=10_000)
    w.downloads_table.selectRow(0)
    qtbot.mouseClick(w.pause_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: w.download_state(REPO).endswith("Paused"), timeout=10_000)
    w.close()

    again = window()  # the app restarted: the unfinished download is still there
    assert again.download_state(REPO).endswith("Paused") and " of " in again.download_state(REPO)
    hub.throttle = 0.0
    again.downloads_table.selectRow(0)
    qtbot.mouseClick(again.resume_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: REPO in rows(again.installed_table), timeout=20_000)
    assert download.pending() == []


def test_cancel_deletes_the_partial_download(window, qtbot, hub):
    hub.throttle = 0.003
    w = window()
    w.download(REPO)
    qtbot.waitUntil(lambda: "left" in w.download_state(REPO), timeout=10_000)
    w.downloads_table.selectRow(0)
    qtbot.mouseClick(w.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: w.downloads_table.rowCount() == 0 and not w.busy(), timeout=10_000)
    assert "cancelled" in w.status.text() and download.pending() == []


def test_import_folder_and_its_errors(window, qtbot, model_dir, tmp_path):
    good = tmp_path / "good"
    shutil.copytree(model_dir("llama"), good)
    bad = tmp_path / "bad"
    shutil.copytree(model_dir("llama"), bad)
    (bad / "tokenizer.json").unlink()
    w = window()
    w.import_folder(str(bad))
    qtbot.waitUntil(lambda: "no tokenizer" in w.status.text(), timeout=10_000)
    w.import_folder(str(good))
    qtbot.waitUntil(lambda: str(good.resolve()) in rows(w.installed_table), timeout=10_000)
    w.installed_table.selectRow(0)
    qtbot.waitUntil(lambda: w.fit_table.rowCount() == 3, timeout=20_000)
    qtbot.waitUntil(lambda: not w.busy(), timeout=10_000)


def test_offline_search_says_so(window, qtbot):
    w = window()  # the test session runs with HF_HUB_OFFLINE=1
    w.search("qwen")
    qtbot.waitUntil(lambda: "offline" in w.status.text(), timeout=10_000)
    assert w.search_button.isEnabled()
