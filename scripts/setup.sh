#!/usr/bin/env bash
# Creates or reuses the virtual environment and installs Folio with its test tools.
# On Debian/Ubuntu as root it also installs the system libraries Qt and MLX need.
set -euo pipefail
VENV=${1:-.venv}
cd "$(dirname "$0")/.."

# Qt needs EGL, fontconfig and xkbcommon (offscreen), and the xcb libraries for a real window on Linux;
# MLX's Linux CPU wheel is fast only with an optimized BLAS (OpenBLAS, preloaded by app.blas).
APT_PACKAGES="libopenblas0-pthread libegl1 libgl1 libfontconfig1 libxkbcommon0 libxkbcommon-x11-0 libdbus-1-3 libglib2.0-0 \
    libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-randr0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1"
if [ "$(uname -s)" = Linux ] && command -v apt-get >/dev/null 2>&1; then
    missing=$(for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
    if [ -n "$missing" ]; then
        if [ "$(id -u)" = 0 ]; then
            echo "setup: installing system packages: $missing"
            apt-get update -qq >/dev/null 2>&1 || true
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
        else
            echo "setup: please install these system packages: sudo apt-get install $missing" >&2
        fi
    fi
fi

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    for c in python3.13 python3.12 python3.11 python3; do
        if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            PYTHON=$c; break
        fi
    done
fi
[ -n "$PYTHON" ] || { echo "setup: Folio needs Python 3.11 or newer" >&2; exit 1; }

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# Reinstall only when the declared dependencies change.
stamp="$VENV/.folio-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    extras=dev
    [ "$(uname -s)" = Darwin ] && extras=dev,mac
    "$VENV/bin/python" -m pip install -q -e ".[$extras]"
    echo "$want" > "$stamp"
fi
