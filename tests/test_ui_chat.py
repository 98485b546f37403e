"""The chat window end to end: real widgets offscreen, a tiny random model, the real store."""

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

pytest.register_assert_rewrite("ui_helpers")
pytest_plugins = ["ui_helpers"]  # the window and endless_model fixtures

from ui_helpers import WAIT, open_window, send, wait_idle  # noqa: E402


def entries(window):
    return [(e.role, e.state) for e in window.chat.transcript.entries]


def test_prompt_streams_into_the_transcript_and_the_store(qtbot, window):
    pieces = []
    window.engine.worker.text.connect(lambda job, piece: pieces.append(piece))
    send(qtbot, window, "Hello there")
    assert window.composer.button.text() == "Stop"
    wait_idle(qtbot, window)
    assert entries(window) == [("user", "complete"), ("assistant", "complete")]
    answer = window.chat.transcript.entries[-1]
    assert pieces and answer.content == "".join(pieces)
    stored = window.store.messages(window.conversation_id)
    assert [m.content for m in stored] == ["Hello there", answer.content]
    assert stored[-1].stats["generated_tokens"] > 0
    assert window.composer.text() == "" and window.composer.button.text() == "Send"
    assert window.stats.text("state") == "idle" and "tok/s" in window.stats.text("speed")
    assert "/ 4,096" in window.stats.text("context")


def test_shift_enter_makes_a_new_line_instead_of_sending(qtbot, window):
    qtbot.keyClicks(window.composer.input, "one")
    qtbot.keyClick(window.composer.input, Qt.Key_Return, Qt.ShiftModifier)
    qtbot.keyClicks(window.composer.input, "two")
    assert window.composer.text() == "one\ntwo" and window.conversation_id is None


def test_stop_mid_answer_keeps_the_partial_text(qtbot, endless_model):
    window = open_window(qtbot, endless_model, max_tokens=100_000)
    send(qtbot, window, "Tell me everything")
    qtbot.waitUntil(lambda: len(window.chat.transcript.entries[-1].content) > 20, timeout=WAIT)
    qtbot.mouseClick(window.composer.button, Qt.LeftButton)  # the Send button reads Stop now
    wait_idle(qtbot, window)
    last = window.store.messages(window.conversation_id)[-1]
    assert last.state == "stopped" and len(last.content) > 20
    assert window.chat.transcript.entries[-1].state == "stopped"
    assert "Stopped" in window.chat.delegate._html(window.chat.transcript.entries[-1], window.chat.delegate._colors(window.palette()), True)
    window.close()


def test_regenerate_replaces_the_last_answer(qtbot, window):
    send(qtbot, window, "Hi")
    wait_idle(qtbot, window)
    first = window.store.messages(window.conversation_id)[-1]
    window.actions_by_name["regenerate"].trigger()
    assert window.chat.transcript.entries[-1].state in ("generating", "waiting")
    wait_idle(qtbot, window)
    msgs = window.store.messages(window.conversation_id)
    assert [m.role for m in msgs] == ["user", "assistant"] and msgs[-1].created > first.created
    assert msgs[-1].state == "complete"


def test_edit_an_earlier_message_and_resubmit(qtbot, window):
    send(qtbot, window, "first question")
    wait_idle(qtbot, window)
    send(qtbot, window, "second question")
    wait_idle(qtbot, window)
    first_user = window.chat.transcript.entries[0]
    window.chat.activate(first_user, "action:edit")
    assert window.composer.text() == "first question" and window.composer.banner.isVisible()
    window.composer.input.selectAll()
    qtbot.keyClicks(window.composer.input, "edited question")
    qtbot.keyClick(window.composer.input, Qt.Key_Return)
    wait_idle(qtbot, window)
    msgs = window.store.messages(window.conversation_id)
    assert [(m.role, m.content if m.role == "user" else "") for m in msgs] == [
        ("user", "edited question"), ("assistant", "")]
    assert not window.composer.banner.isVisible()


def test_switching_conversations_while_generating_keeps_outputs_apart(qtbot, endless_model):
    window = open_window(qtbot, endless_model, max_tokens=300)
    send(qtbot, window, "conversation A")
    conv_a = window.conversation_id
    qtbot.waitUntil(lambda: bool(window.chat.transcript.entries[-1].content), timeout=WAIT)
    window.actions_by_name["new"].trigger()
    conv_b = window.conversation_id
    assert conv_b != conv_a and window.chat.transcript.entries == []
    seen_in_b = []
    window.chat.transcript.rowChanged.connect(
        lambda *_: seen_in_b.append([e.content for e in window.chat.transcript.entries]))
    send(qtbot, window, "conversation B")  # queued behind A
    wait_idle(qtbot, window)
    a = window.store.messages(conv_a)
    b = window.store.messages(conv_b)
    assert [m.content for m in a][0] == "conversation A" and [m.content for m in b][0] == "conversation B"
    assert a[1].state == b[1].state == "complete" and a[1].content and b[1].content
    assert window.chat.transcript.entries[-1].content == b[1].content
    # While B was on screen, nothing of A's answer reached its transcript.
    assert all(a[1].content not in contents for snap in seen_in_b for contents in snap if a[1].content)
    window.open_conversation(conv_a)
    assert window.chat.transcript.entries[-1].content == a[1].content
    window.close()


def test_no_model_installed_shows_the_way_to_the_model_manager(qtbot):
    window = open_window(qtbot)
    # The engine thread lists the installed models through app.hub; the picker fills when it answers.
    qtbot.waitUntil(lambda: "No model is installed" in window.banner.text(), timeout=WAIT)
    assert window.banner.button.text() == "Open Model Manager"
    assert window.picker.itemText(0) == "No model installed"
    send(qtbot, window, "anyone there?")
    assert "Choose a model first" in window.banner.text()
    assert window.composer.text() == "anyone there?"  # nothing typed is lost
    window.close()


def test_a_failure_in_the_worker_shows_its_reason_and_the_app_goes_on(qtbot, window, tmp_path):
    window.settings.set("context_length", 8)
    send(qtbot, window, "this prompt is longer than eight tokens for sure")
    wait_idle(qtbot, window)
    last = window.store.messages(window.conversation_id)[-1]
    assert last.state == "failed" and "over the context limit of 8" in last.stats["error"]
    assert "over the context limit" in window.banner.text()
    assert window.chat.transcript.entries[-1].state == "failed"
    window.settings.set("context_length", 0)
    window.regenerate(None)
    wait_idle(qtbot, window)
    assert window.store.messages(window.conversation_id)[-1].state == "complete"

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no_such_arch"}')
    window.add_model_folder(str(broken))
    qtbot.waitUntil(lambda: "not supported" in window.banner.text(), timeout=WAIT)
    assert window.picker.isEnabled()


def test_quitting_stops_the_worker_and_keeps_the_partial_answer(qtbot, endless_model):
    window = open_window(qtbot, endless_model, max_tokens=100_000)
    send(qtbot, window, "long answer please")
    qtbot.waitUntil(lambda: bool(window.chat.transcript.entries[-1].content), timeout=WAIT)
    conv = window.conversation_id
    window.close()
    assert not window.engine.thread.isRunning()
    last = window.store.messages(conv)[-1]
    assert last.state == "stopped" and last.content


def test_code_blocks_render_monospace_with_a_copy_link(qtbot, window):
    conv = window.new_conversation()
    window.store.add_message(conv, "user", "show code")
    window.store.add_message(conv, "assistant", "Here:\n\n```python\nprint('hi')\n```\n\nDone **now**.")
    window.open_conversation(conv)
    e = window.chat.transcript.entries[-1]
    doc = window.chat.delegate.document(window.chat.transcript.index(1), 700, window.palette())
    assert "print('hi')" in doc.toPlainText() and "Copy" in doc.toPlainText()
    assert "copy-code:0" in doc.toHtml() and "Menlo" in doc.toHtml()
    window.chat.activate(e, "copy-code:0")
    assert QGuiApplication.clipboard().text() == "print('hi')"
    window.actions_by_name["copy_answer"].trigger()
    assert QGuiApplication.clipboard().text() == e.content


def test_sidebar_search_and_rename(qtbot, window):
    a = window.new_conversation()
    window.store.add_message(a, "user", "the zebra question")
    b = window.new_conversation()
    window.store.add_message(b, "user", "the lion question")
    window.sidebar.refresh()
    assert window.sidebar.conversation_ids() == [b, a]
    qtbot.keyClicks(window.sidebar.search, "zebra")
    assert window.sidebar.conversation_ids() == [a]
    window.sidebar._chosen(window.sidebar.list.item(0))
    assert window.conversation_id == a
    window.sidebar.search.clear()
    window.rename_conversation(a, "Zebras")
    assert window.store.get_conversation(a).title == "Zebras" and window.windowTitle().startswith("Zebras")
    window.sidebar.search.clear()


def test_delete_can_be_undone_until_the_undo_window_passes(qtbot, window):
    a = window.new_conversation()
    window.store.add_message(a, "user", "the zebra question")
    b = window.new_conversation()
    window.sidebar.refresh()
    window.open_conversation(a)
    window.sidebar.deleteRequested.emit(a)  # the context menu's Delete
    assert window.sidebar.conversation_ids() == [b] and window.conversation_id == b
    assert "Deleted “the zebra question”" in window.banner.text() and window.banner.button.text() == "Undo"
    assert window.store.get_conversation(a)  # nothing is gone yet
    qtbot.keyClicks(window.sidebar.search, "zebra")
    assert window.sidebar.conversation_ids() == []  # nor found by search
    undo = window.actions_by_name["undo_delete"]
    assert undo.isEnabled() and [k.toString() for k in undo.shortcuts()] == ["Ctrl+Z"]
    undo.trigger()
    assert window.conversation_id == a and window.sidebar.conversation_ids() == [b, a] and not window.banner.text()
    assert [m.content for m in window.store.messages(a)] == ["the zebra question"] and not undo.isEnabled()

    window.deletion.timer.setInterval(50)  # the undo window passes
    window.sidebar.list.setFocus()
    window.sidebar.list.setCurrentRow(window.sidebar.conversation_ids().index(a))
    qtbot.keyClick(window.sidebar.list, Qt.Key_Delete)
    assert window.deletion.pending == a
    qtbot.waitUntil(lambda: window.deletion.pending is None, timeout=WAIT)
    assert [c.id for c in window.store.list_conversations()] == [b] and not window.banner.text()
    assert not undo.isEnabled()


def test_quitting_during_the_undo_window_completes_the_delete(qtbot, model_dir):
    window = open_window(qtbot, model_dir("llama"))
    a = window.new_conversation()
    window.sidebar.deleteRequested.emit(a)
    store = window.store
    window.close()
    assert store.list_conversations() == []
    store.close()


def test_menus_shortcuts_roles_and_accessible_names(window):
    a = window.actions_by_name
    assert a["preferences"].menuRole() == a["preferences"].MenuRole.PreferencesRole
    assert a["quit"].menuRole() == a["quit"].MenuRole.QuitRole
    assert a["about"].menuRole() == a["about"].MenuRole.AboutRole
    keys = {name: [k.toString() for k in act.shortcuts()] for name, act in a.items()}
    assert keys["new"] == ["Ctrl+N"] and keys["close"] == ["Ctrl+W"] and keys["find"] == ["Ctrl+F"]
    assert keys["model"] == ["Ctrl+L"] and keys["stop"] == ["Esc", "Ctrl+."] and keys["copy_answer"] == ["Ctrl+Shift+C"]
    for widget in (window.picker, window.composer.input, window.composer.button, window.composer.attach,
                   window.sidebar.search, window.sidebar.list, window.sidebar.new_button, window.chat):
        assert widget.accessibleName()
    assert window.minimumSize().width() >= 640


def test_copy_diagnostics_names_versions_backend_and_model(window):
    window.copy_diagnostics()
    text = QGuiApplication.clipboard().text()
    assert "Folio " in text and "mlx " in text and "Backend: cpu" in text and "Model: llama" in text

