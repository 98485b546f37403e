"""Help ▸ Copy Diagnostics: versions, backend, memory, model, KV mode and paths for a bug report."""

import importlib.metadata
import platform

from app import __version__, log, paths


def version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def report(settings, model_info: dict, last_stats: dict) -> str:
    import psutil

    s = last_stats
    lines = [
        f"Folio {__version__}",
        f"Python {platform.python_version()} on {platform.platform()} ({platform.machine()})",
        "Packages: " + ", ".join(f"{p} {version(p)}" for p in ("mlx", "mlx-lm", "PySide6-Essentials", "huggingface_hub")),
        f"Backend: {model_info.get('backend', 'not loaded yet')}",
        f"Memory: RSS {psutil.Process().memory_info().rss / 1e9:.2f} GB, total {psutil.virtual_memory().total / 1e9:.1f} GB"
        + (f", MLX active {s.get('active_memory_bytes', 0) / 1e9:.2f} GB, peak {s.get('peak_memory_bytes', 0) / 1e9:.2f} GB" if s else ""),
        f"Model: {model_info.get('model_id', 'none')} ({model_info.get('path', '')})",
        f"KV mode: {settings.kv_mode} (last turn: {s.get('kv_policy', '-')}), context {settings.context_length or 'model max'}",
        f"Data: {paths.data_dir()}",
        f"Log: {log.log_file()}",
    ]
    return "\n".join(lines)
