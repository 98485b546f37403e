"""Where Folio keeps its files: app data and caches under platformdirs, or FOLIO_HOME.

Models are not here: they live in the Hugging Face cache (HF_HOME), shared with mlx-lm.
"""

import os
from pathlib import Path

import platformdirs

APP_NAME = "Folio"


def _home() -> Path | None:
    home = os.environ.get("FOLIO_HOME")
    return Path(home).expanduser() if home else None


def data_dir() -> Path:
    home = _home()
    path = home / "data" if home else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    home = _home()
    path = home / "cache" if home else Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_dir() -> Path:
    path = data_dir() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def settings_file() -> Path:
    return data_dir() / "settings.json"


def kv_cache_dir() -> Path:
    path = cache_dir() / "kv"
    path.mkdir(parents=True, exist_ok=True)
    return path
