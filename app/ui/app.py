"""`folio` with no subcommand: the desktop app's QApplication, main window and event loop."""

import sys

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QMessageBox

from app import __version__, log
from app.engine.errors import FolioError
from app.paths import APP_NAME

logger = log.get("ui")


def make_application(argv=None) -> QApplication:
    app = QApplication.instance() or QApplication([sys.argv[0], *(argv or [])])
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setApplicationVersion(__version__)
    app.setOrganizationName(APP_NAME)

    icon = _icon()
    if icon is not None:
        app.setWindowIcon(icon)
    return app


def _icon():
    from pathlib import Path

    for name in ("icon.png", "Folio.png", "icon_512x512.png"):
        path = Path(__file__).resolve().parents[2] / "resources" / name
        if path.exists():
            return QIcon(str(path))
    return None


def main(argv=None) -> int:
    from app.settings import Settings
    from app.store import Store
    from app.ui import theme
    from app.ui.main_window import MainWindow

    app = make_application([a for a in (argv or []) if not a.startswith("-")])
    settings = Settings()
    theme.apply(app, settings.appearance)
    try:
        store = Store()
    except FolioError as e:
        QMessageBox.critical(None, "Folio", str(e))
        return 1
    window = MainWindow(settings, store)
    window.show()
    window.show_welcome_if_first_run()
    logger.info("app started")
    code = app.exec()
    store.close()
    return code
