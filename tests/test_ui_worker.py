"""The engine worker alone: one thread, queued signals, cancellation, failures as messages."""

import pytest
from PySide6.QtCore import QObject, QThread, Slot

from app.ui.worker import Engine

WAIT = 60_000
HELLO = [{"role": "user", "content": "hello"}]


class Recorder(QObject):
    """Lives on the UI thread, so the worker's signals reach it queued, as they reach the window."""

    def __init__(self, worker):
        super().__init__()
        self.events = []
        for name in ("loaded", "started", "progress", "text", "finished", "failed", "notice", "loadFailed",
                     "loadProgress"):
            getattr(worker, name).connect(getattr(self, "on_" + name.lower()))

    def _add(self, name, *args):
        self.events.append((name, args, QThread.currentThread()))

    @Slot(dict)
    def on_loaded(self, info):
        self._add("loaded", info)

    @Slot(int)
    def on_started(self, job):
        self._add("started", job)

    @Slot(int, int, int)
    def on_progress(self, *a):
        self._add("progress", *a)

    @Slot(int, str)
    def on_text(self, *a):
        self._add("text", *a)

    @Slot(int, str, dict)
    def on_finished(self, *a):
        self._add("finished", *a)

    @Slot(int, str)
    def on_failed(self, *a):
        self._add("failed", *a)

    @Slot(str)
    def on_notice(self, *a):
        self._add("notice", *a)

    @Slot(str, float)
    def on_loadprogress(self, *a):
        self._add("loadProgress", *a)

    @Slot(str, str)
    def on_loadfailed(self, *a):
        self._add("loadFailed", *a)

    def of(self, name):
        return [args for n, args, _ in self.events if n == name]

    def wait(self, qtbot, name, count=1):
        qtbot.waitUntil(lambda: len(self.of(name)) >= count, timeout=WAIT)
        return self.of(name)[count - 1]


@pytest.fixture
def engine(qtbot, model_dir):
    e = Engine()
    rec = Recorder(e.worker)
    e.load(str(model_dir("llama")))
    e.info = rec.wait(qtbot, "loaded")[0]
    yield e
    assert e.shutdown()


def test_answers_stream_to_the_ui_thread_through_queued_signals(qtbot, engine):
    rec = Recorder(engine.worker)
    assert engine.worker.thread() == engine.thread and engine.thread != QThread.currentThread()
    assert engine.info["model_id"].startswith("llama") and engine.info["backend"] == "cpu"
    job = engine.generate(1, HELLO, {"max_tokens": 16, "temperature": 0.0}, "fp16")
    finished_job, text, stats = rec.wait(qtbot, "finished")
    assert finished_job == job and text == "".join(a[1] for a in rec.of("text"))
    assert stats["generated_tokens"] <= 16 and stats["kv_policy"] == "fp16"
    assert rec.of("progress")[-1][1:] == (stats["prompt_tokens"] - 1, stats["prompt_tokens"])
    assert {thread for _, _, thread in rec.events} == {QThread.currentThread()}


def test_an_unavailable_kv_mode_falls_back_with_a_notice(qtbot, engine):
    rec = Recorder(engine.worker)
    engine.generate(1, HELLO, {"max_tokens": 4}, "int4")
    policy = rec.wait(qtbot, "finished")[2]["kv_policy"]
    # Before the compressed caches land this says so and runs fp16; afterwards it runs int4.
    assert policy == "int4" or (policy == "fp16" and "not available" in rec.of("notice")[0][0])


def test_a_job_stopped_while_queued_never_starts(qtbot, engine):
    rec = Recorder(engine.worker)
    first = engine.generate(1, HELLO, {"max_tokens": 64})
    second = engine.generate(2, HELLO, {"max_tokens": 64})
    engine.stop(second)
    rec.wait(qtbot, "finished", 2)
    assert rec.of("finished")[1] == (second, "", {"finish_reason": "cancelled"})
    assert rec.of("started") == [(first,)]


def test_failures_arrive_as_messages_and_the_thread_goes_on(qtbot, engine):
    rec = Recorder(engine.worker)
    engine.generate(1, HELLO * 50, {"max_tokens": 4}, "fp16", context_limit=16)
    assert "over the context limit of 16" in rec.wait(qtbot, "failed")[1]
    engine.load("/no/such/model")
    assert rec.wait(qtbot, "loadFailed")[1] == "No model folder at /no/such/model."
    engine.generate(1, HELLO, {"max_tokens": 4})
    assert "No model is loaded" in rec.wait(qtbot, "failed", 2)[1]


def test_loading_reports_progress_to_the_ui_thread(qtbot, engine, model_dir):
    rec = Recorder(engine.worker)
    engine.load(str(model_dir("qwen3")))
    rec.wait(qtbot, "loaded")
    fractions = [a[1] for a in rec.of("loadProgress")]
    assert fractions and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {thread for _, _, thread in rec.events} == {QThread.currentThread()}
