"""Renders the main window with a real conversation to docs/screenshot.png (offscreen Qt).

    python scripts/screenshot.py [--model FOLDER] [--out docs/screenshot.png] [--dark]

A few chats are written to a throwaway store; the last answer is generated live by the model
(the tiny reference model in ../shared/models by default), so the stats bar shows real
numbers. The earlier turns are written as text: a tiny model's prose would not show what
the transcript renders (markdown, code blocks, states).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ANSWER = """Sure. Folio keeps the whole document in context, so it can quote any page. \
The **int4 KV cache** is what makes that fit:

| context | fp16 KV | int4 KV |
|---|---|---|
| 32K tokens | 4.0 GB | 1.1 GB |
| 128K tokens | 16.0 GB | 4.3 GB |

To read a file in Python:

```python
with open("report.txt", encoding="utf-8") as f:
    text = f.read()
```

The `with` block closes the file even when an error is raised."""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT.parent / "shared" / "models" / "tiny-llama"))
    p.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    p.add_argument("--dark", action="store_true")
    p.add_argument("--size", default="1180x760")
    args = p.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["FOLIO_HOME"] = tempfile.mkdtemp(prefix="folio-shot-")

    from PySide6.QtCore import QEventLoop, QTimer

    from app.settings import Settings
    from app.store import Store
    from app.ui import theme
    from app.ui.app import make_application
    from app.ui.main_window import MainWindow

    app = make_application()
    settings = Settings()
    settings.set("max_tokens", 48)
    settings.set("temperature", 0.6)
    theme.apply(app, "dark" if args.dark else "light")
    store = Store()
    for title in ("Trip planning: Lisbon in May", "Quarterly report summary", "Regex for ISO dates"):
        c = store.create_conversation(title=title)
        store.add_message(c, "user", f"Help me with: {title.lower()}")
        store.add_message(c, "assistant", "Happy to help.")
    conv = store.create_conversation(title="How long can a document be?")
    store.add_message(conv, "user", "How long a PDF can Folio keep in context, and how do I read a file in Python?")
    store.add_message(conv, "assistant", ANSWER)
    store.add_message(conv, "user", "def fibonacci(n):")

    window = MainWindow(settings, store)
    w, h = (int(x) for x in args.size.split("x"))
    window.resize(w, h)
    # On a Mac the menus live in the system's menu bar, not in the window.
    window.menuBar().setVisible(sys.platform == "darwin")
    window.show()

    def wait(cond, timeout=300):
        end = time.monotonic() + timeout
        while not cond() and time.monotonic() < end:
            loop = QEventLoop()
            QTimer.singleShot(20, loop.quit)
            loop.exec()
        return cond()

    window.add_model_folder(args.model)
    if not wait(lambda: bool(window.model_info) or window.banner.property("kind") == "error"):
        print("screenshot: the model did not load in time", file=sys.stderr)
        return 1
    window.open_conversation(conv)
    window.start_answer(conv)  # the last user message gets a live answer
    wait(lambda: not window.answers)
    window.composer.input.setPlainText("Summarize chapter 3 of the attached report")
    wait(lambda: False, 0.3)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    window.grab().save(args.out)
    print(args.out)
    window.close()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
