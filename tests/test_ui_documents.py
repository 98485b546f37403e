"""Document chips in the composer: reading progress, then pages, tokens, fit and memory from the engine thread."""

from pathlib import Path

import pytest
from PySide6.QtCore import QObject, Qt, Slot

from pdf_factory import make_book, make_encrypted, make_pdf

from app.ui.composer import Composer
from app.ui.document_chip import DocumentChip
from app.ui.worker import Engine

WAIT = 60_000


def plain_info(path, **over):
    info = {"path": Path(path), "name": Path(path).name, "summary": "2 pages · 120 tokens · fits (3,000 tokens left)",
            "memory": "KV 30.0 KB in fp16", "whole": True, "warning": "", "detail": "a.pdf · 2 pages"}
    return {**info, **over}


def test_chip_states_are_visible(qtbot, tmp_path):
    chip = DocumentChip(tmp_path / "a.pdf")
    qtbot.addWidget(chip)
    chip.show()
    assert chip.state == "reading" and chip.status.text() == "Reading…"
    chip.set_reading(3, 10)
    assert chip.status.text() == "Reading… 3/10 pages (30%)"

    chip.set_info(plain_info(tmp_path / "a.pdf"))
    assert chip.state == "ready" and chip.memory.isVisible() and chip.memory.text() == "KV 30.0 KB in fp16"
    assert not chip.warning.isVisible()

    chip.set_info(plain_info(tmp_path / "a.pdf", warning="Reading this will take about 2 min 05 s"))
    assert chip.state == "warning" and chip.warning.isVisible() and "2 min 05 s" in chip.warning.text()

    chip.set_info(plain_info(tmp_path / "a.pdf", whole=False, summary="does not fit: 3 passages only"))
    assert chip.state == "partial"

    chip.set_info({"path": tmp_path / "a.pdf", "error": "a.pdf is password-protected; ..."})
    assert chip.state == "error" and "password-protected" in chip.status.text() and not chip.memory.isVisible()

    with qtbot.waitSignal(chip.removeRequested, timeout=1000) as sig:
        qtbot.mouseClick(chip.remove, Qt.LeftButton)
    assert sig.args == [tmp_path / "a.pdf"]


def test_composer_keeps_chip_state_and_removes_through_the_chip(qtbot, tmp_path):
    composer = Composer()
    qtbot.addWidget(composer)
    a, b = tmp_path / "a.pdf", tmp_path / "b.md"
    composer.add_files([a])
    composer.show_documents([plain_info(a)])
    first = composer.chip_widgets[a]
    composer.add_files([b])
    assert composer.chip_widgets[a] is first and first.state == "ready"  # adding b keeps a's figures
    assert composer.chip_widgets[b].state == "reading"
    composer.show_reading(str(b), 1, 4)
    assert "1/4 pages" in composer.chip_widgets[b].status.text()
    with qtbot.waitSignal(composer.attachmentsChanged, timeout=1000) as sig:
        qtbot.mouseClick(first.remove, Qt.LeftButton)
    assert sig.args == [[b]] and list(composer.chip_widgets) == [b]


class Chips(QObject):
    """On the UI thread, like the window: receives the worker's queued results."""

    def __init__(self, worker):
        super().__init__()
        self.infos, self.progress, self.loaded = None, [], False
        worker.loaded.connect(self.on_loaded)
        worker.documentsInspected.connect(self.on_infos)
        worker.documentProgress.connect(self.on_progress)

    @Slot(dict)
    def on_loaded(self, _):
        self.loaded = True

    @Slot(list)
    def on_infos(self, infos):
        self.infos = infos

    @Slot(str, int, int)
    def on_progress(self, *a):
        self.progress.append(a)


@pytest.fixture
def engine(qtbot):
    e = Engine()
    yield e
    assert e.shutdown()


def test_the_engine_thread_reports_each_documents_fit_to_the_chips(qtbot, model_dir, tmp_path, engine):
    chips = Chips(engine.worker)
    small = make_pdf(tmp_path / "small.pdf", ["A short page about orchards.", "Another about bees."])
    locked = make_encrypted(tmp_path / "locked.pdf")
    engine.inspect_documents([small, locked], [], "fp16", 0)  # no model yet: what the files are
    qtbot.waitUntil(lambda: chips.infos is not None, timeout=WAIT)
    assert "choose a model" in chips.infos[0]["summary"] and "password-protected" in chips.infos[1]["error"]

    engine.load(str(model_dir("llama")))
    qtbot.waitUntil(lambda: chips.loaded, timeout=WAIT)
    big = make_book(tmp_path / "big.pdf", 12, words_per_page=60)
    chips.infos = None
    engine.inspect_documents([small, big, locked], [{"role": "user", "content": "hello"}], "fp16", 2048)
    qtbot.waitUntil(lambda: chips.infos is not None, timeout=WAIT)
    ok, partial, bad = chips.infos
    assert ok["whole"] and ok["summary"].startswith("2 pages · ") and ok["summary"].endswith("goes in whole")
    assert ok["memory"].startswith("KV ") and ok["memory"].endswith("in fp16")
    assert not partial["whole"] and "does not fit" in partial["summary"]
    assert bad["error"].startswith("locked.pdf is password-protected")
    assert (str(big), 12, 12) in chips.progress

    composer = Composer()
    qtbot.addWidget(composer)
    composer.add_files([small, big, locked])
    composer.show_documents(chips.infos)
    assert [composer.chip_widgets[p].state for p in (small, big, locked)] == ["ready", "partial", "error"]
