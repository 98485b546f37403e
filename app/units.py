"""Byte counts, token counts and durations as people read them ("4.5 GB", "128K", "3m 05s"); no mlx, no Qt."""


def fmt(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def tokens_label(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 else str(n)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}:{seconds % 60:02d}"
