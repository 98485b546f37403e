"""What Folio.app is made of: Info.plist, py2app options and the files they name, from pyproject.toml.

Importable anywhere (no py2app, no macOS), so the tests on Linux check exactly what a Mac build
will use, and `check_sources()` names every missing piece before py2app starts.
"""

import datetime
import importlib.util
import os
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
RESOURCES = ROOT / "resources"
ICNS = RESOURCES / "Folio.icns"
ENTRY_SCRIPT = PACKAGING / "Folio.py"
ENTITLEMENTS = PACKAGING / "entitlements.plist"
SHADERS = ROOT / "app" / "engine" / "shaders"

APP_NAME = "Folio"
BUNDLE_ID = os.environ.get("FOLIO_BUNDLE_ID", "app.folio.Folio")
# mlx-metal 0.32 ships wheels for macOS 14 and later only; PySide6 6.8+ needs 12 or later.
MIN_MACOS = "14.0"
ARCH = "arm64"  # MLX's Metal backend exists only on Apple silicon

# Imported by name at run time (subcommands, mlx-lm's model families, transformers' tokenizers)
# or shipping native libraries and data beside their code: copied whole, never zipped.
PACKAGES = [
    "app", "mlx", "mlx_lm", "transformers", "tokenizers", "huggingface_hub", "safetensors",
    "jinja2", "pypdfium2", "pypdfium2_raw", "psutil", "platformdirs", "charset_normalizer", "markdown_it",
]
EXCLUDES = [
    "tkinter", "_tkinter", "Tkinter", "tests", "pytest", "_pytest", "pytestqt",
    "torch", "tensorflow", "jax", "IPython", "matplotlib",
]
# Frameworks py2app would otherwise pull in through Python's _tkinter.
DYLIB_EXCLUDES = ["Tcl.framework", "Tk.framework"]
# Qt plugins, relative to PySide6/Qt/plugins: the Cocoa platform (without it the app cannot open
# a window), image formats for icons and pasted images, and the native macOS widget style.
QT_PLUGINS = ["platforms/libqcocoa.dylib", "imageformats", "styles/libqmacstyle.dylib"]
# MLX's native library and its compiled shaders: MLX looks for mlx.metallib beside libmlx.dylib.
MLX_NATIVE = ["lib/libmlx.dylib", "lib/mlx.metallib"]

DOCUMENT_TYPES = [
    {
        "CFBundleTypeName": "PDF Document",
        "CFBundleTypeRole": "Viewer",
        "LSHandlerRank": "Alternate",
        "LSItemContentTypes": ["com.adobe.pdf"],
    },
    {
        "CFBundleTypeName": "Text Document",
        "CFBundleTypeRole": "Viewer",
        "LSHandlerRank": "Alternate",
        "LSItemContentTypes": ["public.plain-text", "net.daringfireball.markdown", "public.source-code"],
    },
]
REQUIRED_PLIST_KEYS = (
    "CFBundleName", "CFBundleDisplayName", "CFBundleIdentifier", "CFBundleVersion",
    "CFBundleShortVersionString", "CFBundlePackageType", "CFBundleIconFile", "LSMinimumSystemVersion",
    "LSArchitecturePriority", "LSApplicationCategoryType", "CFBundleDocumentTypes",
    "NSHumanReadableCopyright", "NSHighResolutionCapable",
)


class PackagingError(Exception):
    """A build step cannot go on; the message names what is missing and how to provide it."""


def project() -> dict:
    """The [project] table of pyproject.toml: name, version, description, license."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def version() -> str:
    return project()["version"]


def build_year() -> int:
    # SOURCE_DATE_EPOCH keeps rebuilt bundles byte-identical (reproducible-builds.org).
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC) if epoch else datetime.datetime.now(datetime.UTC)
    return when.year


def copyright_line() -> str:
    lic = project().get("license", {})
    lic = lic.get("text", "") if isinstance(lic, dict) else str(lic)
    return f"Copyright © {build_year()} the Folio authors." + (f" {lic} License." if lic else "")


def info_plist() -> dict:
    v = version()
    return {
        "CFBundleName": APP_NAME,
        "CFBundleDisplayName": APP_NAME,
        "CFBundleExecutable": APP_NAME,
        "CFBundleIdentifier": BUNDLE_ID,
        "CFBundleVersion": v,
        "CFBundleShortVersionString": v,
        "CFBundlePackageType": "APPL",
        "CFBundleIconFile": ICNS.name,
        "CFBundleDevelopmentRegion": "en",
        "LSMinimumSystemVersion": MIN_MACOS,
        "LSArchitecturePriority": [ARCH],
        # Never under Rosetta: MLX needs the GPU of Apple silicon.
        "LSRequiresNativeExecution": True,
        "LSApplicationCategoryType": "public.app-category.productivity",
        "CFBundleDocumentTypes": DOCUMENT_TYPES,
        "NSHumanReadableCopyright": copyright_line(),
        "NSHighResolutionCapable": True,
        "NSRequiresAquaSystemAppearance": False,  # follow the system's dark mode
        "NSPrincipalClass": "NSApplication",
    }


def site_packages_dest() -> str:
    """Where py2app puts copied packages, relative to Contents/Resources."""
    return f"lib/python{sys.version_info.major}.{sys.version_info.minor}"


def resource_files() -> list[tuple[str, list[str]]]:
    """resources/ is copied beside the `app` package in the bundle, as it sits beside it in the
    repository, so code finding it from `app.__file__` works the same in both."""
    dest = site_packages_dest()
    groups: dict[str, list[str]] = {}
    for path in sorted(RESOURCES.rglob("*")):
        # The .iconset is the icon's source; the bundle carries Folio.icns.
        if path.is_file() and not path.name.startswith(".") and ".iconset" not in path.parent.name:
            rel = path.parent.relative_to(ROOT).as_posix()
            groups.setdefault(f"{dest}/{rel}", []).append(str(path))
    return sorted(groups.items())


def py2app_options() -> dict:
    return {
        "arch": ARCH,
        "iconfile": str(ICNS),
        "plist": info_plist(),
        "packages": PACKAGES,
        "excludes": EXCLUDES,
        "dylib_excludes": DYLIB_EXCLUDES,
        "qt_plugins": QT_PLUGINS,
        "resources": resource_files(),
        # Qt receives files dropped on the Dock icon as QFileOpenEvent; argv emulation would
        # swallow them and is known to break Qt apps.
        "argv_emulation": False,
        # Stripping rewrites the vendors' signed libraries for a few kilobytes; signing redoes them anyway.
        "strip": False,
    }


def package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def qt_plugins_dir() -> Path | None:
    pyside = package_dir("PySide6")
    return pyside / "Qt" / "plugins" if pyside else None


def check_sources(platform: str = sys.platform) -> list[str]:
    """Everything the options name, as a list of one-line problems (empty when all is there).

    Files from the repository are checked everywhere; MLX's Metal library and the Cocoa Qt
    plugins exist only in a Mac's environment, so they are checked when `platform` is darwin.
    """
    problems = []
    for path in (ICNS, ENTRY_SCRIPT, ENTITLEMENTS, SHADERS):
        if not path.exists():
            problems.append(f"missing {path.relative_to(ROOT)}")
    for _, files in resource_files():
        problems += [f"missing {f}" for f in files if not Path(f).is_file()]
    for name in PACKAGES:
        if importlib.util.find_spec(name) is None:
            problems.append(f"package {name} is not installed in this Python ({sys.executable})")
    if platform == "darwin":
        mlx = package_dir("mlx")
        for rel in MLX_NATIVE:
            if mlx is None or not (mlx / rel).exists():
                problems.append(
                    f"MLX's {Path(rel).name} is missing from {mlx / 'lib' if mlx else 'mlx'}: "
                    "pip install --force-reinstall 'mlx-metal' in the build environment"
                )
        plugins = qt_plugins_dir()
        for rel in QT_PLUGINS:
            if plugins is None or not (plugins / rel).exists():
                problems.append(f"Qt plugin {rel} is missing from {plugins}: reinstall PySide6-Essentials")
    return problems
