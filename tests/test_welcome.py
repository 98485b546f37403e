"""The first-run welcome screen: privacy text, a model sized to memory, the model manager, the flag."""

import json
import subprocess
import sys

import pytest
from PySide6.QtWidgets import QLabel

from app.hub import catalog
from app.settings import Settings
from app.ui import welcome
from app.ui.welcome import WelcomeScreen

GiB = 1024**3


def _entry(repo, name, size):
    return {
        "repo_id": repo, "name": name, "parameters": "?B", "quantization": "4-bit", "download_bytes": size,
        "context_length": 32768, "license": "apache-2.0", "description": f"{name} for tests.",
        "config": {"model_type": "llama"},
    }


@pytest.fixture
def small_catalog(tmp_path):
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"models": [
        _entry("org/tiny", "Tiny", 700_000_000),
        _entry("org/small", "Small", 2_300_000_000),
        _entry("org/medium", "Medium", 4_600_000_000),
        _entry("org/large", "Large", 17_000_000_000),
    ]}))
    return path


def _texts(widget):
    return " ".join(label.text() for label in widget.findChildren(QLabel))


@pytest.mark.parametrize("memory_gib, repo", [(8, "org/small"), (16, "org/medium"), (64, "org/large")])
def test_suggestion_is_sized_to_memory(qtbot, small_catalog, memory_gib, repo):
    screen = WelcomeScreen(Settings(), total_memory=memory_gib * GiB, catalog_path=small_catalog)
    qtbot.addWidget(screen)
    assert screen.suggestion.repo_id == repo
    text = _texts(screen)
    assert screen.suggestion.name in text and f"{memory_gib} GB of memory" in text
    assert screen.suggestion.name in screen.open_button.text()


def test_shipped_catalog_suggestions_fit_and_grow_with_memory():
    entries = catalog.load()
    picked = [welcome.suggest(entries, gib * GiB) for gib in (8, 16, 32, 64, 128)]
    assert all(p is not None for p in picked)
    sizes = [p.download_bytes for p in picked]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    for gib, p in zip((8, 16, 32, 64, 128), picked):
        budget = gib * GiB * welcome.WEIGHTS_SHARE
        assert p.download_bytes <= budget
        assert not [e for e in entries if p.download_bytes < e.download_bytes <= budget]


def test_says_everything_stays_local(qtbot, small_catalog):
    screen = WelcomeScreen(Settings(), total_memory=16 * GiB, catalog_path=small_catalog)
    qtbot.addWidget(screen)
    text = _texts(screen)
    assert "Everything stays on" in text and "offline" in text


def test_open_button_emits_suggestion_and_ends_first_run(qtbot, small_catalog):
    settings = Settings()
    assert welcome.should_show(settings)
    screen = WelcomeScreen(settings, total_memory=16 * GiB, catalog_path=small_catalog)
    qtbot.addWidget(screen)
    with qtbot.waitSignal(screen.openModelManager, timeout=2000) as sig:
        screen.open_button.click()
    assert sig.args == ["org/medium"]
    assert Settings().first_run_done is True  # persisted, not only in memory
    assert not welcome.should_show(Settings())


def test_not_now_also_ends_first_run(qtbot, small_catalog):
    screen = WelcomeScreen(Settings(), total_memory=16 * GiB, catalog_path=small_catalog)
    qtbot.addWidget(screen)
    with qtbot.waitSignal(screen.dismissed, timeout=2000):
        screen.later_button.click()
    assert Settings().first_run_done is True


def test_nothing_fits_still_opens_manager(qtbot, small_catalog):
    screen = WelcomeScreen(Settings(), total_memory=1 * GiB, catalog_path=small_catalog)
    qtbot.addWidget(screen)
    assert screen.suggestion is None
    assert "smallest model in the catalog, Tiny" in _texts(screen)
    with qtbot.waitSignal(screen.openModelManager, timeout=2000) as sig:
        screen.open_button.click()
    assert sig.args == [""]


def test_unreadable_catalog_keeps_the_welcome(qtbot, tmp_path):
    bad = tmp_path / "catalog.json"
    bad.write_text("{not json")
    screen = WelcomeScreen(Settings(), total_memory=16 * GiB, catalog_path=bad)
    qtbot.addWidget(screen)
    assert screen.suggestion is None
    assert "download a model in the model manager" in _texts(screen)


def test_welcome_does_not_import_mlx():
    code = "import sys, app.ui.welcome; sys.exit(any(m.split('.')[0] == 'mlx' for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
