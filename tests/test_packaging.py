"""Folio.app's packaging, checked on any OS: py2app options, Info.plist, icon, bundle layout,
release steps failing by name, and `folio --self-test`."""

import importlib.util
import os
import plistlib
import subprocess
import sys
import types
from pathlib import Path

import pytest
from PIL import Image

from app import selftest

ROOT = Path(__file__).resolve().parent.parent


def _load(name):
    # packaging/ is not a package (it would shadow PyPI's `packaging`): load its files by path.
    spec = importlib.util.spec_from_file_location(f"folio_{name}", ROOT / "packaging" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bundle = _load("bundle")
release = _load("release")
make_icon = _load("make_icon")


# -- py2app options ----------------------------------------------------------------
def _named_paths(options):
    yield Path(options["iconfile"])
    for _, files in options["resources"]:
        yield from map(Path, files)


def test_every_file_the_options_name_exists():
    options = bundle.py2app_options()
    paths = list(_named_paths(options))
    assert paths, "the options name no files"
    assert [p for p in paths if not p.is_file()] == []
    assert bundle.ENTRY_SCRIPT.is_file() and bundle.ENTITLEMENTS.is_file()
    assert bundle.check_sources("linux") == []


def test_options_bundle_what_folio_needs_and_leave_out_the_rest():
    options = bundle.py2app_options()
    assert options["arch"] == "arm64"
    assert {"app", "mlx", "mlx_lm"} <= set(options["packages"])
    assert {"tkinter", "_tkinter", "tests", "pytest"} <= set(options["excludes"])
    plugins = options["qt_plugins"]
    assert "platforms/libqcocoa.dylib" in plugins and "imageformats" in plugins
    assert any(p.startswith("styles/") for p in plugins)
    assert options["argv_emulation"] is False
    dests = {dest for dest, _ in options["resources"]}
    assert f"{bundle.site_packages_dest()}/resources" in dests  # beside the app package, as in the repo
    assert not any(".iconset" in d for d in dests)
    assert (ROOT / "resources" / "catalog.json").as_posix() in {f for _, fs in options["resources"] for f in fs}


def test_option_names_are_py2app_options():
    build_app = pytest.importorskip("py2app.build_app", reason="py2app is installed only on Macs (extra 'mac')")
    known = {o[0].rstrip("=").replace("-", "_") for o in build_app.py2app.user_options}
    assert set(bundle.py2app_options()) <= known


def test_mac_native_files_are_checked_by_name(tmp_path, monkeypatch):
    mlx, pyside = tmp_path / "mlx", tmp_path / "PySide6"
    (mlx / "lib").mkdir(parents=True)
    (mlx / "lib" / "libmlx.dylib").write_bytes(b"x")
    for plugin in ("platforms/libqcocoa.dylib", "imageformats/libqjpeg.dylib", "styles/libqmacstyle.dylib"):
        (pyside / "Qt" / "plugins" / plugin).parent.mkdir(parents=True, exist_ok=True)
        (pyside / "Qt" / "plugins" / plugin).write_bytes(b"x")
    monkeypatch.setattr(bundle, "package_dir", lambda name: {"mlx": mlx, "PySide6": pyside}.get(name))
    problems = bundle.check_sources("darwin")
    assert len(problems) == 1 and "mlx.metallib" in problems[0]
    (mlx / "lib" / "mlx.metallib").write_bytes(b"x")
    assert bundle.check_sources("darwin") == []
    (pyside / "Qt" / "plugins" / "platforms" / "libqcocoa.dylib").unlink()
    assert ["platforms/libqcocoa.dylib" in p for p in bundle.check_sources("darwin")] == [True]


# -- Info.plist ----------------------------------------------------------------------
def test_info_plist_is_valid_with_required_keys():
    plist = plistlib.loads(plistlib.dumps(bundle.info_plist()))  # renders and parses back
    assert [k for k in bundle.REQUIRED_PLIST_KEYS if k not in plist] == []
    project = bundle.project()
    assert plist["CFBundleShortVersionString"] == plist["CFBundleVersion"] == project["version"]
    assert plist["CFBundleIdentifier"].count(".") >= 2
    assert tuple(map(int, plist["LSMinimumSystemVersion"].split("."))) >= (14, 0)
    assert plist["LSArchitecturePriority"] == ["arm64"]
    assert plist["LSApplicationCategoryType"].startswith("public.app-category.")
    assert plist["CFBundleIconFile"] == "Folio.icns"
    types_ = {t for d in plist["CFBundleDocumentTypes"] for t in d["LSItemContentTypes"]}
    assert "com.adobe.pdf" in types_
    assert "Copyright ©" in plist["NSHumanReadableCopyright"]


def test_copyright_year_follows_source_date_epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")  # 2026-01-01
    assert "2026" in bundle.info_plist()["NSHumanReadableCopyright"]


# -- icon ----------------------------------------------------------------------------
def test_iconset_has_every_size_macos_needs():
    names = {name: px for name, px in make_icon.ICONSET_ENTRIES}
    assert len(names) == 10 and set(names.values()) == {16, 32, 64, 128, 256, 512, 1024}
    for name, px in names.items():
        with Image.open(make_icon.ICONSET / name) as im:
            assert im.size == (px, px), name
            assert im.mode == "RGBA"
            assert im.getpixel((px // 2, px // 2))[3] == 255  # an opaque body...
            assert im.getpixel((0, 0))[3] == 0  # ...with transparent corners


def test_icns_holds_the_retina_sizes():
    with Image.open(bundle.ICNS) as im:
        pixels = {w * scale for w, _, scale in im.info["sizes"]}
    assert {32, 64, 128, 256, 512, 1024} <= pixels


# -- a built bundle's layout -----------------------------------------------------------
MACHO = b"\xcf\xfa\xed\xfe" + b"\0" * 28


def _fake_bundle(root: Path) -> Path:
    app = root / "Folio.app"
    contents = app / "Contents"
    (contents / "MacOS").mkdir(parents=True)
    (contents / "MacOS" / "Folio").write_bytes(MACHO)
    (contents / "MacOS" / "python").write_bytes(MACHO)
    (contents / "Info.plist").write_bytes(plistlib.dumps(bundle.info_plist()))
    res = contents / "Resources"
    lib = res / bundle.site_packages_dest()
    files = {
        res / "Folio.icns": b"icns",
        lib / "mlx" / "core.cpython-311-darwin.so": MACHO,
        lib / "mlx" / "lib" / "libmlx.dylib": MACHO,
        lib / "mlx" / "lib" / "mlx.metallib": b"MTLB",
        res / "qt_plugins" / "platforms" / "libqcocoa.dylib": MACHO,
        res / "qt_plugins" / "styles" / "libqmacstyle.dylib": MACHO,
        res / "qt_plugins" / "imageformats" / "libqjpeg.dylib": MACHO,
        lib / "app" / "__init__.pyc": b"pyc",
        lib / "resources" / "catalog.json": b"{}",
        contents / "Frameworks" / "QtCore.framework" / "Versions" / "A" / "QtCore": MACHO,
        contents / "Frameworks" / "Python.framework" / "Versions" / "3.11" / "Python": MACHO,
    }
    for src in bundle.SHADERS.iterdir():
        if src.is_file():
            files[lib / "app" / "engine" / "shaders" / src.name] = src.read_bytes()
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return app


def test_sound_bundle_verifies(tmp_path):
    assert release.bundle_problems(_fake_bundle(tmp_path)) == []
    assert release.main(["verify", str(tmp_path / "Folio.app")]) == 0


def test_metallib_away_from_libmlx_is_caught(tmp_path, capsys):
    app = _fake_bundle(tmp_path)
    moved = app / "Contents" / "Frameworks" / "libmlx.dylib"
    moved.write_bytes(MACHO)  # what a relocating bundler does: the library without its shaders
    problems = release.bundle_problems(app)
    assert len(problems) == 1 and "Contents/Frameworks/libmlx.dylib has no mlx.metallib" in problems[0]
    assert release.main(["verify", str(app)]) == 1
    assert "mlx.metallib" in capsys.readouterr().err


def test_missing_plugin_shaders_and_tk_are_caught(tmp_path):
    app = _fake_bundle(tmp_path)
    lib = app / "Contents" / "Resources" / bundle.site_packages_dest()
    (app / "Contents" / "Resources" / "qt_plugins" / "platforms" / "libqcocoa.dylib").unlink()
    (lib / "tkinter").mkdir()
    (lib / "tkinter" / "__init__.pyc").write_bytes(b"pyc")
    shaders = sorted((lib / "app" / "engine" / "shaders").iterdir())
    if shaders:
        shaders[0].unlink()
    problems = " | ".join(release.bundle_problems(app))
    assert "libqcocoa.dylib" in problems and "tkinter" in problems
    if shaders:
        assert shaders[0].name in problems


def test_signing_goes_inside_out(tmp_path):
    app = _fake_bundle(tmp_path)
    order = release.signing_order(app)
    rel = [p.relative_to(app).as_posix() for p in order]
    assert rel[-1] == "."
    assert "Contents/MacOS/Folio" not in rel  # signed with the bundle itself
    assert not any("QtCore.framework/Versions" in r for r in rel)  # frameworks are signed whole
    assert "Contents/Frameworks/QtCore.framework" in rel
    assert not any(r.endswith((".metallib", ".json", ".pyc", ".icns")) for r in rel)
    depths = [len(p.parts) for p in order[:-1]]
    assert depths == sorted(depths, reverse=True)


# -- release steps fail by name ----------------------------------------------------------
@pytest.fixture
def clean_env(monkeypatch):
    for name in ("FOLIO_SIGN_IDENTITY", "FOLIO_NOTARY_PROFILE", "FOLIO_APPLE_ID", "FOLIO_TEAM_ID", "FOLIO_APP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_sign_names_the_missing_identity(tmp_path, clean_env, capsys):
    app = _fake_bundle(tmp_path)
    assert release.main(["sign", str(app), "--dry-run"]) == 1
    err = capsys.readouterr().err.strip()
    assert "FOLIO_SIGN_IDENTITY" in err and "\n" not in err


def test_sign_dry_run_uses_hardened_runtime(tmp_path, clean_env, capsys):
    clean_env.setenv("FOLIO_SIGN_IDENTITY", "Developer ID Application: Test (TEAM123456)")
    app = _fake_bundle(tmp_path)
    assert release.main(["sign", str(app), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    signs = [line for line in lines if line.startswith("+ codesign --force")]
    assert len(signs) == len(release.signing_order(app))
    assert all("--options runtime" in line and "--timestamp" in line for line in signs)
    assert signs[-1].endswith(str(app)) and "--entitlements" in signs[-1]
    assert lines[-1].startswith("+ codesign --verify --deep --strict")


def test_notarize_names_missing_credentials(clean_env, capsys):
    clean_env.setenv("FOLIO_APPLE_ID", "me@example.com")
    assert release.main(["notarize", "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "FOLIO_NOTARY_PROFILE" in err and "missing: FOLIO_TEAM_ID, FOLIO_APP_PASSWORD" in err


def test_notarize_dry_run_submits_and_staples(clean_env, capsys):
    clean_env.setenv("FOLIO_NOTARY_PROFILE", "folio-notary")
    assert release.main(["notarize", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "notarytool submit" in out and "--keychain-profile folio-notary --wait" in out
    assert "stapler staple" in out and "ditto -c -k --keepParent" in out


def test_all_fails_before_building_without_credentials(clean_env, capsys):
    clean_env.setenv("FOLIO_SIGN_IDENTITY", "Developer ID Application: Test (TEAM123456)")
    assert release.main(["all", "--dry-run"]) == 1
    captured = capsys.readouterr()
    assert "FOLIO_NOTARY_PROFILE" in captured.err and "setup.py" not in captured.out


def test_dmg_dry_run(clean_env, capsys):
    assert release.main(["dmg", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "hdiutil create" in out and f"Folio-{bundle.version()}.dmg" in out and "unsigned" in out


# -- folio --self-test ---------------------------------------------------------------------
def _self_test(env_overrides=None):
    env = dict(os.environ, **(env_overrides or {}))
    return subprocess.run([sys.executable, "-m", "app", "--self-test"], capture_output=True, text=True, env=env, timeout=120)


def test_self_test_passes_on_this_machine():
    result = _self_test()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("Folio ") and "All 7 checks passed." in out
    for name in ("backend", "attention", "prefill", "forward pass", "data dir", "HF cache", "Qt"):
        assert f"ok    {name}" in out
    assert "Traceback" not in out + result.stderr


def test_self_test_fails_readably_when_data_dir_is_unusable(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where FOLIO_HOME should be a folder")
    result = _self_test({"FOLIO_HOME": str(blocker)})
    assert result.returncode == 1
    assert "FAIL  data dir" in result.stdout and "1 of 7 checks failed: data dir." in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_self_test_reads_a_populated_hf_cache(tmp_path, monkeypatch):
    snapshot = tmp_path / "hf" / "hub" / "models--org--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    result = _self_test({"HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 0, result.stdout
    assert "readable: 1 model," in result.stdout


def _fake_kernels(monkeypatch, decode):
    fake = types.ModuleType("app.engine.kernels")
    fake.available = lambda: "metal"
    fake.decode_attention = decode
    monkeypatch.setitem(sys.modules, "app.engine.kernels", fake)


def test_kernel_check_passes_a_correct_kernel(monkeypatch):
    _fake_kernels(monkeypatch, selftest.undo_transforms(selftest.dequantized_attention))
    assert selftest.check_attention().startswith("metal kernel matches")


def test_kernel_check_catches_a_kernel_that_ignores_the_transforms(monkeypatch):
    def no_transforms(q, k, v, *, rotate_q=False, v_mean=None, rotate_out=False, tail=None, k_mean=None, **kw):
        return selftest.dequantized_attention(q, k, v, **kw)

    _fake_kernels(monkeypatch, no_transforms)
    with pytest.raises(selftest.CheckFailed, match="rotated, centered cache"):
        selftest.check_attention()


def test_kernel_check_catches_a_kernel_that_sees_skipped_slots(monkeypatch):
    def sees_everything(q, k, v, *, skip=None, **kw):
        return selftest.undo_transforms(selftest.dequantized_attention)(q, k, v, **kw)

    _fake_kernels(monkeypatch, sees_everything)
    with pytest.raises(selftest.CheckFailed, match="rotated, centered cache"):
        selftest.check_attention()


def test_kernel_check_catches_a_wrong_kernel(monkeypatch):
    def off_by_a_bit(q, k, v, **kw):
        return selftest.undo_transforms(selftest.dequantized_attention)(q, k, v, **kw) * 1.05

    _fake_kernels(monkeypatch, off_by_a_bit)
    [result] = selftest.run_checks([("attention", selftest.check_attention)])
    assert not result.ok and "relative error" in result.detail


def _model_space_stand_in(monkeypatch, scale=1.0, takes=True):
    """The GPU prefill path replaced by the reference path (times `scale`), or by one that declines."""
    from app.engine import attention

    def stand_in(q, view, **kw):
        if not takes:
            return None
        attention.force_reference(True)
        try:
            return attention.attend(q, view, kw["scale"]) * scale
        finally:
            attention.force_reference(None)

    _fake_kernels(monkeypatch, selftest.undo_transforms(selftest.dequantized_attention))
    monkeypatch.setattr(attention, "_prefill_model_space", stand_in)


def test_prefill_check_without_a_kernel_says_so(monkeypatch):
    monkeypatch.setattr("app.engine.kernels.available", lambda: None)
    assert selftest.check_prefill().startswith("no GPU kernel on this backend")


def test_prefill_check_passes_a_correct_path(monkeypatch):
    _model_space_stand_in(monkeypatch)
    n = len(selftest.PREFILL_CASES) * len(selftest.PREFILL_CHUNKS)
    assert selftest.check_prefill().startswith(f"metal prefill (span kernel in the model's space + SDPA) matches the "
                                               f"reference path on {n} chunks")


@pytest.mark.parametrize("scale,takes,message", [(1.05, True, "relative error"), (1.0, False, "did not take")])
def test_prefill_check_catches_a_wrong_or_missing_path(monkeypatch, scale, takes, message):
    _model_space_stand_in(monkeypatch, scale, takes)
    [result] = selftest.run_checks([("prefill", selftest.check_prefill)])
    assert not result.ok and message in result.detail


def test_kernel_check_catches_reads_past_length(monkeypatch):
    def reads_every_slot(q, k, v, *, length, **kw):
        return selftest.undo_transforms(selftest.dequantized_attention)(q, k, v, length=k[0].shape[2], **kw)

    _fake_kernels(monkeypatch, reads_every_slot)
    with pytest.raises(selftest.CheckFailed, match="relative error"):
        selftest.check_attention()


def test_a_crashing_check_is_reported_not_raised():
    def boom():
        raise RuntimeError("the GPU caught fire\nsecond line")

    [result] = selftest.run_checks([("backend", boom)])
    assert not result.ok and result.detail == "RuntimeError: the GPU caught fire"


def _fake_reference(monkeypatch, reference):
    monkeypatch.setitem(sys.modules, "app.engine.kernels", types.SimpleNamespace(available=lambda: None))
    monkeypatch.setitem(sys.modules, "app.engine.attention", types.SimpleNamespace(reference_decode_attention=reference))


def test_without_a_kernel_the_reference_is_checked(monkeypatch):
    _fake_reference(monkeypatch, selftest.dequantized_attention)
    detail = selftest.check_attention()
    assert detail.startswith("no GPU kernel on this backend; reference matches dequantized attention")


def test_a_wrong_reference_fails(monkeypatch):
    def ignores_the_window(q, k, v, *, window=None, **kw):
        return selftest.dequantized_attention(q, k, v, **kw)

    _fake_reference(monkeypatch, ignores_the_window)
    with pytest.raises(selftest.CheckFailed, match="window 128"):
        selftest.check_attention()
