"""`folio bench ui`: is the window responsive while an answer streams into a long conversation?

The real main window (offscreen unless a display is set), the real store and worker. A
200-message conversation is opened, then the worker streams a 2,000-token answer into it as
fast as the model goes, while a 16 ms timer on the UI thread records how late each tick fires.
The end-of-text token is switched off (as `folio bench generate` does), so the answer always
runs the full length. The conversation is the prompt, so the answer starts after its prefill;
the table gives the lateness during prefill and during decoding apart.
"""

import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from app.bench.common import emit, table

TICK_MS = 16


def add_arguments(p):
    p.add_argument("--model", required=True, help="model folder (a small one streams fastest: the hardest case)")
    p.add_argument("--tokens", type=int, default=2000, help="answer length")
    p.add_argument("--messages", type=int, default=200, help="messages in the open conversation")
    p.add_argument("--json", action="store_true")


def long_context_copy(model: Path, into: Path) -> Path:
    """The model folder with every file linked, its context long enough for the whole
    conversation (RoPE runs past its training length)."""
    into.mkdir(parents=True, exist_ok=True)
    for f in model.iterdir():
        if f.name not in ("config.json", "generation_config.json"):
            (into / f.name).symlink_to(f.resolve())
    for name in ("config.json", "generation_config.json"):
        if (model / name).exists():
            cfg = json.loads((model / name).read_text())
            if "max_position_embeddings" in cfg:
                cfg["max_position_embeddings"] = max(cfg["max_position_embeddings"], 65536)
            (into / name).write_text(json.dumps(cfg))
    return into


def long_conversation(store, n: int) -> int:
    conv = store.create_conversation(title="A long conversation")
    for i in range(n // 2):
        store.add_message(conv, "user", f"Question {i}: how do I read a file in Python, part {i}?")
        store.add_message(
            conv, "assistant",
            f"Answer {i}. Use **open** with a context manager:\n\n```python\nwith open('data_{i}.txt') as f:\n"
            f"    text = f.read()\n```\n\n- it closes the file\n- it handles errors",
        )
    return conv


def run(args) -> int:
    from app.engine.errors import FolioError

    model = Path(args.model).expanduser()
    if not (model / "config.json").exists():
        raise SystemExit(f"folio bench ui: no model folder at {model}")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = Path(tempfile.mkdtemp(prefix="folio-bench-ui-"))
    os.environ["FOLIO_HOME"] = str(tmp / "home")
    try:
        return _measure(args, long_context_copy(model, tmp / "model"))
    except FolioError as e:
        raise SystemExit(f"folio bench ui: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _wait(app, cond, timeout_s=600):
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise SystemExit("folio bench ui: timed out")
        app.processEvents()
        time.sleep(0.001)


def _measure(args, model: Path) -> int:
    from PySide6.QtCore import Qt, QTimer

    from app.settings import Settings
    from app.store import Store
    from app.ui import theme
    from app.ui.app import make_application
    from app.ui.main_window import MainWindow

    app = make_application()
    settings = Settings()
    for k, v in {"max_tokens": args.tokens, "kv_mode": "fp16", "temperature": 0.7}.items():
        settings.set(k, v)
    theme.apply(app, "light")
    store = Store()
    conv = long_conversation(store, args.messages)
    window = MainWindow(settings, store)
    window.resize(1100, 760)
    window.show()
    window.add_model_folder(str(model))
    _wait(app, lambda: bool(window.model_info))
    # The worker is idle; no MLX call is made here, only the stop set is emptied.
    window.engine.worker._model.tokenizer.eos_token_ids = set()

    t0 = time.perf_counter()
    window.open_conversation(conv)
    window.chat.viewport().repaint()
    open_ms = (time.perf_counter() - t0) * 1000

    ticks: list[float] = []
    timer = QTimer(timerType=Qt.PreciseTimer, interval=TICK_MS)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    flushes = []
    window.chat.transcript.rowChanged.connect(lambda *_: flushes.append(1))
    timer.start()
    t_send = time.perf_counter()
    window.composer.input.setPlainText("Write a very long answer.")
    window.composer.send()
    _wait(app, lambda: not window.answers)
    t_end = time.perf_counter()
    timer.stop()
    stats = window.store.messages(conv)[-1].stats
    late = [max(0.0, (b - a) * 1000 - TICK_MS) for a, b in zip(ticks, ticks[1:])]
    t_first = t_send + stats.get("ttft_s", 0.0)
    late_prefill = [x for x, t in zip(late, ticks[1:]) if t < t_first]
    late_decode = [x for x, t in zip(late, ticks[1:]) if t >= t_first]
    window.close()
    store.close()

    result = {
        "messages": args.messages,
        "tokens": stats.get("generated_tokens", 0),
        "decode_tps": round(stats.get("decode_tps", 0.0), 1),
        "stream_s": round(t_end - t_send, 2),
        "text_updates": len(flushes),
        "ticks": len(ticks),
        "prompt_tokens": stats.get("prompt_tokens", 0),
        "prefill_s": round(stats.get("ttft_s", 0.0), 2),
        "worst_late_ms": round(max(late, default=0.0), 1),
        "worst_late_prefill_ms": round(max(late_prefill, default=0.0), 1),
        "worst_late_decode_ms": round(max(late_decode, default=0.0), 1),
        "p99_late_ms": round(sorted(late)[int(0.99 * (len(late) - 1))] if late else 0.0, 1),
        "mean_late_ms": round(statistics.mean(late) if late else 0.0, 2),
        "open_conversation_ms": round(open_ms, 1),
    }
    text = table(
        ["messages", "prompt tok", "answer tok", "tok/s", "text updates", "16 ms ticks",
         "worst late ms (prefill)", "worst late ms (decode)", "p99 late ms", "open conv ms"],
        [[result["messages"], result["prompt_tokens"], result["tokens"], result["decode_tps"], result["text_updates"],
          result["ticks"], result["worst_late_prefill_ms"], result["worst_late_decode_ms"], result["p99_late_ms"],
          result["open_conversation_ms"]]],
    )
    emit(args, result, text)
    return 0
