"""Durability for real: a child process streams an answer into the store and is killed with SIGKILL."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

from app.store import Store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The child: one finished exchange, a second question, then an answer streamed token by token
# until it is killed. It prints each id as soon as the call that stored it has returned.
CHILD = textwrap.dedent("""
    import sys, time
    from app.store import Store
    s = Store(sys.argv[1])
    c = s.create_conversation(model_id="tiny")
    print("conv", c, s.add_message(c, "user", "first question"), flush=True)
    m = s.begin_stream(c)
    s.update_stream(m, "first answer")
    s.finish_message(m, "first answer, complete", stats={"generated_tokens": 4})
    print("msg", m, flush=True)
    print("msg", s.add_message(c, "user", "second question"), flush=True)
    m = s.begin_stream(c)
    print("stream", m, flush=True)
    text = ""
    for i in range(1_000_000):
        text += f"tok{i} "
        s.update_stream(m, text)
        time.sleep(0.005)
""")


def token_text(n):
    return "".join(f"tok{i} " for i in range(n))


def on_disk(path, msg_id):
    db = sqlite3.connect(path, timeout=5)
    try:
        row = db.execute("SELECT content, state FROM messages WHERE id = ?", (msg_id,)).fetchone()
    finally:
        db.close()
    return row


def test_sigkill_mid_answer_keeps_everything_and_marks_it_interrupted(tmp_path):
    path = tmp_path / "folio.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    try:
        _, conv, first_q = child.stdout.readline().split()
        first_a = int(child.stdout.readline().split()[1])
        second_q = int(child.stdout.readline().split()[1])
        stream = int(child.stdout.readline().split()[1])
        # Wait until at least two once-a-second saves of the streaming answer have reached the disk.
        seen, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline:
            row = on_disk(path, stream)
            if row and row[0] and (not seen or row[0] != seen[-1]):
                seen.append(row[0])
            if len(seen) >= 2:
                break
            time.sleep(0.05)
        assert len(seen) >= 2, "the streaming answer never reached the disk"
        assert child.poll() is None, "the child ended before it was killed"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL

    with Store(path) as store:
        msgs = store.messages(int(conv))
        assert [m.id for m in msgs] == [int(first_q), first_a, second_q, stream]
        assert [(m.role, m.content, m.state) for m in msgs[:3]] == [
            ("user", "first question", "complete"),
            ("assistant", "first answer, complete", "complete"),
            ("user", "second question", "complete"),
        ]
        assert msgs[1].completion_tokens == 4
        partial = msgs[3]
        assert partial.role == "assistant" and partial.state == "interrupted"
        # The partial answer is a clean prefix of what was streamed, no shorter than the last save seen.
        n = partial.content.count("tok")
        assert partial.content == token_text(n)
        assert len(partial.content) >= len(seen[-1]) > 0
        assert [h.message_id for h in store.search("second question")] == [second_q]
    # Reopening again changes nothing: interrupted stays interrupted.
    with Store(path) as store:
        assert store.messages(int(conv))[3].state == "interrupted"
