"""One rotating log file in the app data dir; user-facing messages never carry a traceback."""

import logging
import logging.handlers

from app import paths

_configured = False


def setup(verbose: bool = False) -> logging.Logger:
    global _configured
    root = logging.getLogger("folio")
    if _configured:
        return root
    _configured = True
    root.setLevel(logging.DEBUG)
    try:
        handler = logging.handlers.RotatingFileHandler(
            log_file(), maxBytes=2_000_000, backupCount=3, encoding="utf-8"
        )
    except OSError:
        # An unusable data dir must not crash startup: `folio --self-test` is what reports it.
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")
    )
    root.addHandler(handler)
    if verbose:
        console = logging.StreamHandler()
        console.setLevel(logging.INFO)
        console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        root.addHandler(console)
    return root


def log_file():
    return paths.log_dir() / "folio.log"


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"folio.{name}")
